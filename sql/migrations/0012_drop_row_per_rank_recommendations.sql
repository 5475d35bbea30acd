-- Drop the row-per-rank table recommendations: 0010 converted its batches and 0011 moved the view off it.
-- Side tables of publishers that never attached are not partitions, so they survive; retention drops them.
DROP TABLE recsys.recommendations;
