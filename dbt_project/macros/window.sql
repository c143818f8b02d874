{#-
  The processing window, from the vars the orchestrator passes.

  gp_window() returns a dict of SQL literals and integers:
    ws, we               TIMESTAMP literals of [window_start, window_end)  (rows written)
    ctx_start, ctx_end   TIMESTAMP literals of the context read from raw_readings
                         [window_start - lookback_minutes, window_end + lookahead_minutes)
    ws_us, we_us         the window as epoch microseconds (BIGINT literals)
    part_us              partition length in microseconds (OLD_DATA is judged per partition)
  At parse time (execute is false) the window vars may be absent; a placeholder is returned then.
  At run time a missing or malformed window is a compile error, never a silent default.
-#}
{% macro gp_parse_ts(name) -%}
    {%- set raw = var(name, none) -%}
    {%- if raw is none -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error("var '" ~ name ~ "' is required, e.g. --vars '{window_start: \"2024-01-01 00:00:00\", window_end: \"2024-01-01 00:05:00\"}'") }}
        {%- endif -%}
        {%- do return(modules.datetime.datetime(1970, 1, 1)) -%}
    {%- endif -%}
    {#- datetime.fromisoformat: 'YYYY-MM-DD HH:MM:SS', 'T' separator, fractions, offsets (converted to UTC).
        A malformed value fails the compilation with Python's "Invalid isoformat string". -#}
    {%- set parsed = modules.datetime.datetime.fromisoformat((raw | string) | trim) -%}
    {%- if parsed.tzinfo is not none -%}
        {%- set parsed = parsed.astimezone(modules.datetime.timezone.utc).replace(tzinfo=none) -%}
    {%- endif -%}
    {%- do return(parsed) -%}
{%- endmacro %}

{% macro gp_int_var(name, minimum=0) -%}
    {%- set value = var(name) | int(-1) -%}
    {%- if value < minimum -%}
        {{ exceptions.raise_compiler_error("var '" ~ name ~ "' must be an integer >= " ~ minimum ~ ", got '" ~ var(name) ~ "'") }}
    {%- endif -%}
    {%- do return(value) -%}
{%- endmacro %}

{% macro gp_epoch_us(ts) -%}
    {%- set delta = ts - modules.datetime.datetime(1970, 1, 1) -%}
    {%- do return(delta.days * 86400000000 + delta.seconds * 1000000 + delta.microseconds) -%}
{%- endmacro %}

{% macro gp_ts_literal(ts) -%}
    {%- do return("TIMESTAMP '" ~ ts.strftime('%Y-%m-%d %H:%M:%S.%f') ~ "'") -%}
{%- endmacro %}

{% macro gp_window() -%}
    {%- set td = modules.datetime.timedelta -%}
    {%- set ws = gp_parse_ts('window_start') -%}
    {%- set we = gp_parse_ts('window_end') -%}
    {%- if not execute and we <= ws -%}{%- set we = ws + td(minutes=5) -%}{%- endif -%}
    {%- if we <= ws -%}
        {{ exceptions.raise_compiler_error("window_end (" ~ we ~ ") must be after window_start (" ~ ws ~ ")") }}
    {%- endif -%}
    {%- set ctx_start = ws - td(minutes=gp_int_var('lookback_minutes')) -%}
    {%- set ctx_end = we + td(minutes=gp_int_var('lookahead_minutes')) -%}
    {%- do return({
        'ws': gp_ts_literal(ws),
        'we': gp_ts_literal(we),
        'ctx_start': gp_ts_literal(ctx_start),
        'ctx_end': gp_ts_literal(ctx_end),
        'ws_us': gp_epoch_us(ws),
        'we_us': gp_epoch_us(we),
        'part_us': gp_int_var('partition_minutes', 1) * 60000000,
    }) -%}
{%- endmacro %}

{#- Pre-hook of the window-incremental models: drop exactly the window's rows before the insert
    (same transaction), so a re-run replaces them and rows outside the window are untouched. -#}
{% macro gp_delete_window(time_col='ts') -%}
    {%- if is_incremental() -%}
        {%- set w = gp_window() -%}
        delete from {{ this }} where {{ time_col }} >= {{ w.ws }} and {{ time_col }} < {{ w.we }}
    {%- endif -%}
{%- endmacro %}
