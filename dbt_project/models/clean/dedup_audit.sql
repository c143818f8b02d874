{#-
  Audit of the dedup of clean_telemetry: one row per (sensor_id, slot) of the window that received more
  than one reading. The kept reading is the latest arrival (tie: highest file_id), in the same order as
  clean_telemetry (macro gp_latest_first); the others are listed as dropped, newest first. Values are in
  the canonical unit.
  Downstream of clean_telemetry (it reads the window's duplicated slots from it), so
  `dbt build --select clean_telemetry+` builds both. Window-incremental like clean_telemetry.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    pre_hook="{{ gp_delete_window('ts') }}",
) }}
{%- set w = gp_window() -%}

with

duplicated as (
    select sensor_id, epoch_us(ts) as slot_us, quality
    from {{ ref('clean_telemetry') }}
    where ts >= {{ w.ws }} and ts < {{ w.we }} and n_copies > 1
),

copies as (
    select
        r.sensor_id,
        r.slot_us,
        any_value(d.quality) as kept_quality,
        count(*)::integer as n_copies,
        list(
            {'value': r.value_c, 'raw_value': r.raw_value, 'raw_unit': r.raw_unit,
             'arrived_at': r.arrived_at, 'file_id': r.file_id}
            order by {{ gp_latest_first('r') }}
        ) as c
    from {{ ref('stg_readings') }} as r
    join duplicated as d on d.sensor_id = r.sensor_id and d.slot_us = r.slot_us
    -- implied by the join; as a semi-join it drops the readings of sensors without duplicates before
    -- the wide join (0.040 -> 0.031 s on the 1M readings of `bench ingest`)
    where r.sensor_id in (select sensor_id from duplicated)
    group by r.sensor_id, r.slot_us
)

select
    sensor_id,
    make_timestamp(slot_us) as ts,
    n_copies,
    c[1].value as kept_value,
    c[1].raw_value as kept_raw_value,
    c[1].raw_unit as kept_raw_unit,
    c[1].arrived_at as kept_arrived_at,
    c[1].file_id as kept_file_id,
    kept_quality,
    [x.value for x in c[2:]] as dropped_values,
    [x.raw_value for x in c[2:]] as dropped_raw_values,
    [x.raw_unit for x in c[2:]] as dropped_raw_units,
    [x.arrived_at for x in c[2:]] as dropped_arrived_at,
    [x.file_id for x in c[2:]] as dropped_file_ids,
    len(list_distinct([x.value for x in c])) > 1 as values_differ
from copies
