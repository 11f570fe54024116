-- Items per class of one scoring run; with a $score, only the items whose score is defined.
-- Parameters: $files (the run's Parquet files), $score (a score column name, or '' for all).
with scores as (
    select
        label,
        case $score
            when 'avh' then avh
            when 'avc_true' then avc_true
            when 'confidence' then confidence
            when 'margin' then margin
            when 'loss' then loss
            when 'entropy' then entropy
            when 'el2n' then el2n
            when 'feature_norm' then feature_norm
        end as score
    from read_parquet($files)
)

select label, count(*) as n
from scores
where $score = '' or (score is not null and not isnan(score))
group by label
order by label
