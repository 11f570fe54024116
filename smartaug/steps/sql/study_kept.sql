-- What selections kept: their augmentations counted by kind and class.
-- Parameters: $ids (selection ids).
select s.selection_id, a.kind, s.label, count(*) as n
from selections as s
join augmentations as a on a.aug_id = s.aug_id
where list_contains($ids, s.selection_id)
group by s.selection_id, a.kind, s.label
order by s.selection_id, a.kind, s.label
