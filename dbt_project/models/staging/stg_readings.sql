{#-
  Raw readings of the context range [window_start - lookback, window_end + lookahead) with their slot
  (epoch microseconds, ts floored to the sensor's interval_s grid) and canonical value (value_c, NULL
  when the unit is unknown). Ephemeral: inlined as a CTE. SQL in macros/readings.sql.
-#}
{{ gp_canonical_readings() }}
