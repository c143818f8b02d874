{#-
  SELECT of the raw readings of the context range [window_start - lookback, window_end + lookahead),
  each with its slot (ts floored to the sensor's interval_s grid, as epoch microseconds) and its value
  in the sensor's canonical unit (value_c; NULL when the unit has no conversion in unit_conversions).
  Used by the ephemeral model stg_readings and, inlined (so DuckDB need not materialise a shared CTE),
  by clean_telemetry's peer checks. `sensor_filter` is an optional condition on the sensors alias s.
-#}
{% macro gp_canonical_readings(sensor_filter=none) -%}
{%- set w = gp_window() -%}
select
    r.sensor_id,
    (epoch_us(r.ts) // (s.interval_s * 1000000)) * (s.interval_s * 1000000) as slot_us,
    r.value as raw_value,
    r.unit as raw_unit,
    case
        when r.unit is null or r.unit = s.unit then r.value
        else r.value * c.factor
    end as value_c,
    r.arrived_at,
    r.file_id
from {{ source('telemetry', 'raw_readings') }} as r
join {{ source('telemetry', 'sensors') }} as s
    on s.sensor_id = r.sensor_id and s.interval_s > 0{% if sensor_filter %} and ({{ sensor_filter }}){% endif %}
left join {{ ref('unit_conversions') }} as c
    on c.from_unit = r.unit and c.to_unit = s.unit
where r.ts >= {{ w.ctx_start }} and r.ts < {{ w.ctx_end }}
{%- endmacro %}

{#- (sensor_id, slot_us) of the same readings as gp_canonical_readings, without the unit lookup: enough to
    find the slots that received more than one reading. -#}
{% macro gp_reading_slots() -%}
{%- set w = gp_window() -%}
select
    r.sensor_id,
    (epoch_us(r.ts) // (s.interval_s * 1000000)) * (s.interval_s * 1000000) as slot_us
from {{ source('telemetry', 'raw_readings') }} as r
join {{ source('telemetry', 'sensors') }} as s
    on s.sensor_id = r.sensor_id and s.interval_s > 0
where r.ts >= {{ w.ctx_start }} and r.ts < {{ w.ctx_end }}
{%- endmacro %}

{#- Dedup order of the copies of one (sensor, slot), kept one first: latest arrival, then highest file_id,
    then the values themselves so that the choice never depends on scan order. -#}
{% macro gp_latest_first(alias=none) -%}
    {%- set p = (alias ~ '.') if alias else '' -%}
    {{ p }}arrived_at desc, {{ p }}file_id desc, {{ p }}value_c desc, {{ p }}raw_value desc, {{ p }}raw_unit desc
{%- endmacro %}
