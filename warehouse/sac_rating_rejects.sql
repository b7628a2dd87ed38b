-- Record the staged bad ratings rows (NULL is not a vote and not a reject). One reject per
-- rating:<sid>:<iid> (the first row wins). $1 = batch (snapshot key), $2 = tail: true when only the
-- snapshot's new rows were staged, whose earlier rows' rejects are already stored and come first, so an
-- item with any stored reject keeps it; false (whole file): identical rejects already stored are left
-- untouched, so a re-run changes nothing, and a different reason replaces the stored one.
INSERT OR REPLACE INTO rejects (dataset, item_id, stage, reason, batch, rejected_at)
WITH bad AS (
    SELECT
        'rating:' || coalesce(raw[1], 'NULL') || ':' || coalesce(raw[2], 'NULL') AS item_id,
        CASE status
            WHEN 'bad id' THEN 'bad id: sid ' || coalesce(raw[1], 'NULL') || ', iid ' || coalesce(raw[2], 'NULL')
                || ' are not integers'
            WHEN 'not a number' THEN 'not a number: rating ' || raw[3]
            WHEN 'out of range' THEN 'out of range: rating ' || raw[3] || ' is not an integer 1..10'
            WHEN 'unknown image' THEN 'unknown image: no images row with id ' || raw[2]
        END AS reason,
        row_no
    FROM sac_snap_ratings
    WHERE status NOT IN ('ok', 'null')
), last AS (
    SELECT item_id, arg_min(reason, row_no) AS reason FROM bad GROUP BY item_id
)
SELECT 'sac', l.item_id, 'ratings', l.reason, $1, current_timestamp
FROM last l
WHERE NOT EXISTS (
    SELECT 1 FROM rejects x
    WHERE x.dataset = 'sac' AND x.stage = 'ratings' AND x.item_id = l.item_id AND (x.reason = l.reason OR $2)
)
