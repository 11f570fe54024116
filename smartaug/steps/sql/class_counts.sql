-- Items per class of one scoring run; with a $score, only the items whose score is defined.
-- Parameters: $files (the run's Parquet files), $score (a score column name, or '' for all).
with scores as (
    select
        label,
        -- any score column when $score is '' (no score: every item counts)
        columns(lambda c: c = coalesce(nullif($score, ''), 'avh')) as score
    from read_parquet($files)
)

select label, count(*) as n
from scores
where $score = '' or (score is not null and not isnan(score))
group by label
order by label
