-- The 8 easiest and the 8 hardest augmentations of a scoring run by AVH, with their images
-- (NULL in a recipe pool: the report regenerates them from the recipe columns).
-- Parameters: $scoring_run_id.
with scored as (
    select
        a.aug_id, a.sample_id, a.k, a.kind, a.seed, a.spec_hash, a.image, a.height, a.width,
        a.channels, s.avh
    from scores as s
    join augmentations as a on a.aug_id = s.item_id
    where s.scoring_run_id = $scoring_run_id and s.avh is not null
),

easiest as (
    select * from scored order by avh limit 8
),

hardest as (
    select * from scored order by avh desc limit 8
),

final as (
    select * from easiest
    union all
    select * from hardest
)

select * from final
