{#- Generic test: no two rows share the same values of `columns` (rows with a NULL key are ignored). -#}
{% test unique_combination(model, columns) %}
    {%- set cols = columns | join(', ') -%}
    select {{ cols }}, count(*) as n_rows
    from {{ model }}
    where {% for c in columns %}{{ c }} is not null{{ ' and ' if not loop.last }}{% endfor %}
    group by {{ cols }}
    having count(*) > 1
{% endtest %}
