{#-
  Cleaned telemetry: one row per sensor and expected slot of [window_start, window_end).

  Readings of [window_start - lookback_minutes, window_end + lookahead_minutes) are read as context
  (neighbours, gaps, stuck runs, peers, drift); only the window's slots are written. The pre-hook deletes
  the window's rows and the insert follows in the same transaction, so a re-run replaces exactly them.

  Shape (for speed): the raw readings are deduplicated (row_number over the duplicated slots only),
  flagged row-wise, and walked by ONE window pass (plain lag/lead over the observed readings of a sensor,
  in the order of one BIGINT key per (sensor, slot)). Missing slots are not joined in: every reading
  emits itself plus the missing slots up to its successor with unnest(...), so gap rows and their
  interpolation anchors come out of the same stream. The zone peer checks (FLATLINE, DRIFT) read the few
  v_mag/frequency readings in a separate small branch that ends in one row per sensor. Rules and
  thresholds: README.md.
-#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    pre_hook="{{ gp_delete_window('ts') }}",
) }}
{%- set w = gp_window() -%}
{%- set b = gp_bits() -%}
{%- set stuck_n = gp_int_var('stuck_samples', 2) -%}
{%- set max_gap_us = gp_int_var('max_interp_gap_s') * 1000000 -%}
{%- set late_us = gp_int_var('late_after_s') * 1000000 -%}
{%- set drift_min = gp_int_var('drift_min_samples', 1) -%}
{%- set drift_pu = var('drift_pu') | float -%}
{#- lag/lead depth: 2 for spikes and rate of change, stuck_samples - 1 for stuck runs -#}
{%- set depth = [stuck_n - 1, 2] | max -%}

with

limits as (
    select * from {{ ref('kind_limits') }}
),

sensors as (
    select
        s.sensor_id,
        s.kind,
        s.zone,
        s.unit,
        s.interval_s::bigint * 1000000 as iv_us,
        -- first slot of the sensor's grid inside the window
        (({{ w.ws_us }} + s.interval_s::bigint * 1000000 - 1) // (s.interval_s::bigint * 1000000))
            * (s.interval_s::bigint * 1000000) as first_us,
        case when l.scale = 'absolute' then 1.0 else nullif(s.nominal, 0) end as scale,
        l.q_lo, l.q_hi, l.inv_lo, l.inv_hi,
        coalesce(l.discrete, false) as discrete,
        l.roc_per_s,
        l.spike,
        coalesce(l.stuck_check, false) as stuck_check,
        coalesce(l.flatline_check, false) as flatline_check,
        coalesce(l.drift_check, false) as drift_check
    from {{ source('telemetry', 'sensors') }} as s
    left join limits as l on l.kind = s.kind
    where s.interval_s > 0
),

-- ---------------------------------------------------------------------------------------------------
-- Zone peers (kinds with flatline_check / drift_check only): per sensor, whether it drifts and which of
-- its slots are flatline zeros.
-- ---------------------------------------------------------------------------------------------------
peer_readings as (
    select
        p.sensor_id,
        p.slot_us,
        p.value_c / s.scale as pu,
        s.zone,
        s.kind,
        s.flatline_check,
        s.drift_check
    from (
        -- the same reading clean_telemetry keeps for the slot
        select sensor_id, slot_us, value_c
        from ({{ gp_canonical_readings("s.kind in (select kind from limits where flatline_check or drift_check)") }})
        qualify row_number() over (partition by sensor_id, slot_us order by {{ gp_latest_first() }}) = 1
    ) as p
    join sensors as s on s.sensor_id = p.sensor_id
    where p.value_c / s.scale is not null
        and not {{ gp_invalid_range('p.value_c / s.scale') }}
),

peer_stats as (
    select
        zone,
        kind,
        slot_us,
        count_if(pu <> 0)::bigint as n_live,
        list(pu order by pu) filter (where drift_check and pu <> 0) as vals
    from peer_readings
    group by zone, kind, slot_us
),

peer_checks as (
    select
        r.sensor_id,
        r.slot_us,
        -- FLATLINE: exact zero while another sensor of the kind in the zone reads non-zero.
        r.flatline_check and r.pu = 0 and p.n_live > 0 as is_flatline,
        -- Deviation from the median of the *other* live (non-zero) sensors, needing >= 2 of them. With
        -- the zone's live values sorted a_1..a_n and m = n // 2, removing this reading leaves a median of
        --   n even: a_m if pu >= a_(m+1) else a_(m+1)
        --   n odd:  (a_m+a_(m+1))/2 if pu >= a_(m+2), (a_(m+1)+a_(m+2))/2 if pu <= a_m, else (a_m+a_(m+2))/2
        case
            when r.drift_check and r.pu <> 0 and p.n_live >= 3 then
                r.pu - case
                    when p.n_live % 2 = 0 then
                        case when r.pu >= p.vals[p.n_live // 2 + 1] then p.vals[p.n_live // 2]
                             else p.vals[p.n_live // 2 + 1] end
                    when r.pu >= p.vals[p.n_live // 2 + 2] then (p.vals[p.n_live // 2] + p.vals[p.n_live // 2 + 1]) / 2
                    when r.pu <= p.vals[p.n_live // 2] then (p.vals[p.n_live // 2 + 1] + p.vals[p.n_live // 2 + 2]) / 2
                    else (p.vals[p.n_live // 2] + p.vals[p.n_live // 2 + 2]) / 2
                end
        end as dev
    from peer_readings as r
    join peer_stats as p on p.zone = r.zone and p.kind = r.kind and p.slot_us = r.slot_us
),

-- DRIFT: |mean deviation| over the trailing lookback_minutes (a rolling window per slot, so the verdict
-- for a slot never depends on how long a range the run covers) above drift_pu, from at least
-- drift_min_samples readings.
peer_rolling as (
    select
        *,
        coalesce(
            count(dev) over trail >= {{ drift_min }} and abs(avg(dev) over trail) > {{ drift_pu }},
            false
        ) as is_drift_slot
    from peer_checks
    window trail as (
        partition by sensor_id order by slot_us
        range between {{ gp_int_var('lookback_minutes') * 60000000 }} preceding and current row
    )
),

peer_sensors as (
    select
        sensor_id,
        list(slot_us) filter (where is_flatline) as flat_slots,
        list(slot_us) filter (where is_drift_slot) as drift_slots
    from peer_rolling
    group by sensor_id
),

sensors_ext as (
    select s.*, ps.flat_slots, ps.drift_slots
    from sensors as s
    left join peer_sensors as ps on ps.sensor_id = s.sensor_id
),

-- ---------------------------------------------------------------------------------------------------
-- Readings: dedup, row-wise checks, one window pass.
-- ---------------------------------------------------------------------------------------------------

-- Sort key of a reading: k(sensor, slot) = sensor_id * 2^31 + (slot in seconds - ck_base_s), one BIGINT
-- that orders like (sensor_id, slot_us) (slots are whole seconds; ck_base_s lies 2^30 s before the
-- context, so the offset stays in [0, 2^31) for any sane window and interval) and identifies the
-- (sensor, slot): cheaper to group, join and sort on than the pair.
{%- set ck_base_s = (w.ws_us - gp_int_var('lookback_minutes') * 60000000) // 1000000 - 1073741824 %}
{%- set ck = "(sensor_id::bigint * 2147483648 + (slot_us // 1000000 - " ~ ck_base_s ~ "))" %}

-- One row per (sensor, slot) with readings: the latest arrival wins (tie: highest file_id, then the
-- remaining columns so that the choice is always deterministic). Duplicates are rare: only the slots with
-- more than one reading are sorted; the others pass through (the readings SELECT is inlined, not shared,
-- so that DuckDB need not materialise it).
dup_slots as (
    select {{ ck }} as ck, count(*)::integer as n_copies
    from ({{ gp_reading_slots() }})
    group by ck
    having count(*) > 1
),

slots as (
    select r.*, 1 as n_copies
    from (
        select sensor_id, slot_us, {{ ck }} as ck, value_c, raw_value, raw_unit, arrived_at
        from ({{ gp_canonical_readings() }})
    ) as r
    anti join dup_slots as d on d.ck = r.ck
    union all by name
    select r.*, d.n_copies
    from (
        select sensor_id, slot_us, {{ ck }} as ck, value_c, raw_value, raw_unit, arrived_at, file_id
        from ({{ gp_canonical_readings() }})
    ) as r
    join dup_slots as d on d.ck = r.ck
    qualify row_number() over (partition by r.ck order by {{ gp_latest_first('r') }}) = 1
),

checked as (
    select
        sl.sensor_id,
        sl.slot_us,
        sl.ck,
        sl.n_copies,
        sl.value_c,
        sl.raw_value,
        sl.raw_unit,
        sl.arrived_at,
        {{ gp_invalid_range('sl.value_c / s.scale') }} as inv,
        {{ gp_questionable_range('sl.value_c / s.scale') }} as q_range,
        coalesce(list_contains(s.flat_slots, sl.slot_us), false) as is_flatline
    from slots as sl
    join sensors_ext as s on s.sensor_id = sl.sensor_id
),

-- Window pass: neighbours among the sensor's readings (gaps are simply absent). u is the usable value:
-- the canonical value unless removed (unknown unit, invalid range) or a flatline zero. The window is NOT
-- partitioned by sensor (100k tiny partitions cost more than the sort): it runs over all readings in
-- ck order, and a neighbour counts only when its ck lies in the sensor's range [ck_lo, ck_lo + 2^31).
walked as (
    select
        * exclude (ck, ck_lo),
        {%- for k in range(1, depth + 1) %}
        case when lag(ck, {{ k }}) over w >= ck_lo then lag(u, {{ k }}) over w end as u_b{{ k }},
        case when lead(ck, {{ k }}) over w < ck_lo + 2147483648 then lead(u, {{ k }}) over w end as u_f{{ k }},
        {%- endfor %}
        case when lag(ck, 1) over w >= ck_lo then (lag(ck, 1) over w - ck_lo + {{ ck_base_s }}) * 1000000 end as t1,
        case when lag(ck, 2) over w >= ck_lo then (lag(ck, 2) over w - ck_lo + {{ ck_base_s }}) * 1000000 end as t2,
        case when lead(ck, 1) over w < ck_lo + 2147483648 then (lead(ck, 1) over w - ck_lo + {{ ck_base_s }}) * 1000000 end as tn,
        case when lead(ck, 2) over w < ck_lo + 2147483648 then (lead(ck, 2) over w - ck_lo + {{ ck_base_s }}) * 1000000 end as tn2
    from (
        select
            *,
            sensor_id::bigint * 2147483648 as ck_lo,
            case when not inv and not is_flatline then value_c end as u
        from checked
    )
    window w as (order by ck)
),

-- sensor attributes joined after the window pass (keeps the sorted payload narrow)
walked_ext as (
    select
        wk.*,
        s.iv_us,
        s.first_us,
        s.unit,
        coalesce(list_contains(s.drift_slots, wk.slot_us), false) as is_drift,
        s.stuck_check,
        s.spike * s.scale as spike_abs,
        s.roc_per_s * s.scale as roc_abs
    from walked as wk
    join sensors_ext as s on s.sensor_id = wk.sensor_id
),

flagged as (
    select
        *,
        -- SPIKE: both adjacent slots hold usable readings that agree with each other while this one is
        -- more than `spike` away from both.
        coalesce(
            t1 = slot_us - iv_us and tn = slot_us + iv_us
            and abs(value_c - u_b1) > spike_abs and abs(value_c - u_f1) > spike_abs
            and abs(u_f1 - u_b1) < spike_abs,
            false
        ) as is_spike,
        -- the previous / next reading is a usable spike (same test centred on it); an unusable one is
        -- skipped anyway
        coalesce(
            t2 = t1 - iv_us and t1 = slot_us - iv_us
            and abs(u_b1 - u_b2) > spike_abs and abs(u_b1 - u) > spike_abs and abs(u - u_b2) < spike_abs,
            false
        ) as prev_spike,
        coalesce(
            tn = slot_us + iv_us and tn2 = tn + iv_us
            and abs(u_f1 - u) > spike_abs and abs(u_f1 - u_f2) > spike_abs and abs(u_f2 - u) < spike_abs,
            false
        ) as next_spike,
        -- identical consecutive readings: run length backwards / forwards (capped at stuck_samples)
        case
            {%- for k in range(1, stuck_n) %}
            when u_b{{ k }} is distinct from u then {{ k }}
            {%- endfor %}
            else {{ stuck_n }}
        end
        + case
            {%- for k in range(1, stuck_n) %}
            when u_f{{ k }} is distinct from u then {{ k }}
            {%- endfor %}
            else {{ stuck_n }}
        end - 1 as run_len
    from walked_ext
),

rated as (
    select
        *,
        -- RATE_OF_CHANGE against the previous usable reading (the one before when that was a spike).
        coalesce(
            not inv and case
                when u_b1 is not null and not prev_spike then abs(value_c - u_b1) > roc_abs * (slot_us - t1) / 1e6
                when u_b2 is not null then abs(value_c - u_b2) > roc_abs * (slot_us - t2) / 1e6
            end,
            false
        ) as is_roc,
        coalesce(stuck_check and u <> 0 and run_len >= {{ stuck_n }}, false) as is_stuck
    from flagged
),

-- Every reading emits its own slot (when inside the window) and the missing slots up to the next
-- reading (or the window end); a sensor's first reading also emits the missing slots before it.
emitted as (
    select
        *,
        -- the common case (the reading's own slot only) as a literal list: cheaper than range()
        unnest(case
            when e_start = slot_us and e_end > slot_us and e_end <= slot_us + iv_us then [slot_us]
            else range(e_start, e_end, iv_us)
        end) as out_us
    from (
        select
            *,
            case when t1 is null then first_us else greatest(slot_us, first_us) end as e_start,
            least(coalesce(tn, {{ w.we_us }}), {{ w.we_us }}) as e_end
        from rated
    )
),

resolved as (
    select
        sensor_id,
        out_us,
        out_us <> slot_us as is_gap,
        iv_us,
        unit,
        case when out_us = slot_us then n_copies else 0 end as n_copies,
        case when out_us = slot_us then value_c end as value_c,
        case when out_us = slot_us then raw_value end as raw_value,
        case when out_us = slot_us then raw_unit end as raw_unit,
        case when out_us = slot_us then arrived_at end as arrived_at,
        case
            -- a spike: replaced from its two neighbours when they are not spikes themselves
            when out_us = slot_us then is_spike and not prev_spike and not next_spike and iv_us <= {{ max_gap_us }}
            -- a missing slot after this reading, up to the next one: both must be usable, hole short
            when out_us > slot_us then u is not null and u_f1 is not null and tn - slot_us - iv_us <= {{ max_gap_us }}
            -- missing slots before the sensor's first reading have no left anchor
            else false
        end as is_interp,
        case
            when out_us = slot_us then u_b1 + (u_f1 - u_b1) * (slot_us - t1) / (tn - t1)
            when out_us > slot_us then u + (u_f1 - u) * (out_us - slot_us) / (tn - slot_us)
        end as interp_value,
        case
            when out_us <> slot_us then 0
            else
                case when inv or q_range then {{ b.OUT_OF_RANGE }} else 0 end
                + case when is_roc then {{ b.RATE_OF_CHANGE }} else 0 end
                + case when is_spike then {{ b.SPIKE }} else 0 end
                + case when is_stuck then {{ b.STUCK }} else 0 end
                + case when is_flatline then {{ b.FLATLINE }} else 0 end
                + case
                    when arrived_at > make_timestamp(
                        (slot_us // {{ w.part_us }}) * {{ w.part_us }} + {{ w.part_us }} + {{ late_us }}
                    ) then {{ b.OLD_DATA }}
                    else 0
                  end
                + case when raw_unit is not null and raw_unit <> unit then {{ b.UNIT_CONVERTED }} else 0 end
                + case when n_copies > 1 then {{ b.DUPLICATE }} else 0 end
        end as bits_reading,
        out_us = slot_us and (value_c is null or inv or is_spike) as is_removed,
        is_drift
    from emitted
),

-- Sensors without a single reading in the context: every slot of the window is missing.
silent as (
    select
        s.sensor_id,
        unnest(range(s.first_us, {{ w.we_us }}, s.iv_us)) as out_us,
        true as is_gap,
        s.iv_us,
        s.unit,
        0 as n_copies,
        null::double as value_c,
        null::double as raw_value,
        null::varchar as raw_unit,
        null::timestamp as arrived_at,
        false as is_interp,
        null::double as interp_value,
        0 as bits_reading,
        false as is_removed,
        false as is_drift
    from sensors as s
    anti join (
        select distinct sensor_id
        from {{ source('telemetry', 'raw_readings') }}
        where ts >= {{ w.ctx_start }} and ts < {{ w.ctx_end }}
    ) as seen on seen.sensor_id = s.sensor_id
),

valued as (
    select
        *,
        case
            when is_interp then interp_value
            when is_gap or is_removed then null
            else value_c
        end as clean_value
    from (
        select * from resolved
        union all by name
        select * from silent
    )
),

final as (
    select
        *,
        (
            bits_reading
            + case when is_gap then {{ b.GAP }} else 0 end
            + case when is_interp then {{ b.INTERPOLATED }} else 0 end
            + case when is_drift and clean_value is not null then {{ b.DRIFT }} else 0 end
        )::integer as quality_bits
    from valued
)

select
    sensor_id,
    make_timestamp(out_us) as ts,
    clean_value as value,
    raw_value as raw_value,
    raw_unit as raw_unit,
    unit,
    case
        when clean_value is null then 'invalid'
        when is_interp then 'substituted'
        when quality_bits & {{ gp_questionable_mask() }} <> 0 then 'questionable'
        else 'good'
    end as quality,
    quality_bits,
    arrived_at as arrived_at,
    n_copies
from final
