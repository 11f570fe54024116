-- The curriculum rounds of an experiment with each round's model accuracy.
-- Parameters: $experiment_id.
with final as (
    select
        d.round, d.selection_id, d.previous_selection_id, d.model_id, d.jaccard,
        d.moved_in, d.moved_out, d.ks_avh, d.ks_pvalue, m.test_acc
    from drift as d
    left join models as m using (model_id)
    where d.experiment_id = $experiment_id
)

select * from final order by round
