-- Fingerprint of the attached snapshot's ratings up to rowid $1: sha256 of the rows (rowid, sid, iid,
-- rating) at 17 rowids spread over 1..$1, $1 included (absent rowids drop out). Asked of SQLite itself
-- (sqlite_query): DuckDB's scanner does not push rowid filters down and would read the whole table.
SELECT sha256(coalesce(string_agg(
    concat_ws(',', rowid, coalesce(sid, 'NULL'), coalesce(iid, 'NULL'), coalesce(rating, 'NULL')), ';'
    ORDER BY CAST(rowid AS BIGINT)
), ''))
FROM sqlite_query(
    'sac_src',
    'WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < 16)
     SELECT r.rowid AS rowid, r.sid AS sid, r.iid AS iid, r.rating AS rating
     FROM k JOIN ratings r ON r.rowid = max(1, (?1 * k.n) / 16)',
    params := {'max_rowid': $1::BIGINT}
)
