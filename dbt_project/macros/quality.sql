{#-
  Quality bits of clean.clean_telemetry.quality_bits. Must equal gridpipeline.telemetry.quality.QualityBit
  (gridpipeline_tests/telemetry/test_dbt_clean.py checks it).
-#}
{% macro gp_bits() -%}
    {%- do return({
        'OUT_OF_RANGE': 1,
        'RATE_OF_CHANGE': 2,
        'SPIKE': 4,
        'STUCK': 8,
        'FLATLINE': 16,
        'OLD_DATA': 32,
        'GAP': 64,
        'INTERPOLATED': 128,
        'UNIT_CONVERTED': 256,
        'DUPLICATE': 512,
        'DRIFT': 1024,
    }) -%}
{%- endmacro %}

{#- Bits that make a kept value questionable (the others only inform or come with invalid/substituted). -#}
{% macro gp_questionable_mask() -%}
    {%- set b = gp_bits() -%}
    {{- b.OUT_OF_RANGE + b.RATE_OF_CHANGE + b.STUCK + b.FLATLINE + b.OLD_DATA + b.DRIFT -}}
{%- endmacro %}

{#- Range checks on a per-unit expression x, with the kind_limits columns in scope. Exact 0 is never out
    of range (a de-energised element reads 0; FLATLINE judges zeros against the peers). Never NULL. -#}
{% macro gp_invalid_range(x) -%}
    coalesce({{ x }} <> 0 and ({{ x }} < inv_lo or {{ x }} > inv_hi or (discrete and {{ x }} <> round({{ x }}))), false)
{%- endmacro %}

{% macro gp_questionable_range(x) -%}
    coalesce({{ x }} <> 0 and ({{ x }} < q_lo or {{ x }} > q_hi), false)
{%- endmacro %}
