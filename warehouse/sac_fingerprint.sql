-- Fingerprint of one table of the attached snapshot up to rowid $1: sha256 of its rows at 17 rowids spread
-- over 1..$1, $1 included (absent rowids drop out). $2 is the SQLite query that reads those rows as
-- (rowid, a, b, c) (warehouse/sac._spread_rows). Asked of SQLite itself (sqlite_query): DuckDB's scanner
-- does not push rowid filters down and would read the whole table.
SELECT sha256(coalesce(string_agg(
    concat_ws(',', rowid, coalesce(a, 'NULL'), coalesce(b, 'NULL'), coalesce(c, 'NULL')), ';'
    ORDER BY CAST(rowid AS BIGINT)
), ''))
FROM sqlite_query('sac_src', $2, params := {'max_rowid': $1::BIGINT})
