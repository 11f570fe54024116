-- One DuckDB view per smartaug table, over the table's Parquet partitions.
-- Ad hoc, from the repository root:   duckdb -init storage/views.sql
-- or through the pipeline's own root:  smartaug sql "SELECT ..."  (same file, root substituted)
-- Partitions appear only when complete (atomic rename), so these views never see partial files.

CREATE OR REPLACE VIEW datasets AS SELECT * FROM read_parquet('storage/datasets/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW samples AS SELECT * FROM read_parquet('storage/samples/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW pools AS SELECT * FROM read_parquet('storage/pools/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW augmentations AS SELECT * FROM read_parquet('storage/augmentations/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW models AS SELECT * FROM read_parquet('storage/models/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW scoring_runs AS SELECT * FROM read_parquet('storage/scoring_runs/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW scores AS SELECT * FROM read_parquet('storage/scores/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW selections AS SELECT * FROM read_parquet('storage/selections/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW experiments AS SELECT * FROM read_parquet('storage/experiments/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW studies AS SELECT * FROM read_parquet('storage/studies/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW runs AS SELECT * FROM read_parquet('storage/runs/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW history AS SELECT * FROM read_parquet('storage/history/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW drift AS SELECT * FROM read_parquet('storage/drift/*/*.parquet', union_by_name = true, hive_partitioning = false);
CREATE OR REPLACE VIEW atlas AS SELECT * FROM read_parquet('storage/atlas/*/*.parquet', union_by_name = true, hive_partitioning = false);
