-- The atlas: per kind x magnitude bin x class, what the baseline makes of the augmentations.
-- Input: the registered table `items` (one row per augmentation of the scoring run: kind,
-- magnitude, magnitude_bin, label, its scores, whether the baseline classifies its original
-- correctly, and the true class's probability on the original and on it).
-- flip_rate: of the augmentations whose original the baseline gets right, the share it gets
-- wrong (NULL when it gets no original of the cell right).
select
    kind,
    magnitude_bin,
    min(magnitude) as magnitude_min,
    max(magnitude) as magnitude_max,
    label,
    count(*) as n,
    avg(avh) as avh_mean,
    quantile_cont(avh, 0.25) as avh_q1,
    quantile_cont(avh, 0.5) as avh_median,
    quantile_cont(avh, 0.75) as avh_q3,
    avg(loss) as loss_mean,
    quantile_cont(loss, 0.25) as loss_q1,
    quantile_cont(loss, 0.5) as loss_median,
    quantile_cont(loss, 0.75) as loss_q3,
    avg(margin) as margin_mean,
    quantile_cont(margin, 0.25) as margin_q1,
    quantile_cont(margin, 0.5) as margin_median,
    quantile_cont(margin, 0.75) as margin_q3,
    count(*) filter (where orig_correct) as n_orig_correct,
    count(*) filter (where orig_correct and not correct) as n_flipped,
    (count(*) filter (where orig_correct and not correct))::double
        / nullif(count(*) filter (where orig_correct), 0) as flip_rate,
    avg(orig_p_true - p_true) as confidence_drop_mean
from items
group by kind, magnitude_bin, label
order by kind, magnitude_bin, label
