-- The table macros the selection queries share; created on the selection engine before each
-- selection query runs (smartaug.steps.select), and part of every selection id's SQL hash.
--
-- ranked(files, score, direction, per_class, groups, quotas): the items of one scoring run
-- whose `score` column (picked by name: no file lists the score columns) is defined, with
-- their hardness (score * direction: +1 when higher is harder, -1 when lower is), their group
-- (their class when per_class, else -1), the group's quota n (groups[i] gets quotas[i];
-- a group without a quota is left out), their rank r in the group, easiest first (0-based,
-- ties broken by item_id), and the group's size total. An undefined score (NULL in the
-- lake, or NaN) leaves the item out.
create or replace macro ranked(files, score, direction, per_class, groups, quotas) as table
with scored as (
    select item_id, label, columns(lambda c: c = score) as s from read_parquet(files)
),

defined as (
    select
        item_id,
        label,
        s as score,
        s * direction as hardness,
        case when per_class then label else -1 end as grp
    from scored
    where s is not null and not isnan(s)
),

quota as (
    select unnest(groups) as grp, unnest(quotas) as n
)

select
    d.*,
    q.n,
    row_number() over (partition by d.grp order by d.hardness, d.item_id) - 1 as r,
    count(*) over (partition by d.grp) as total
from defined as d
join quota as q on q.grp = d.grp
