-- Record the snapshot's bad ratings rows (NULL is not a vote and not a reject). One reject per
-- rating:<sid>:<iid> (the first row wins); identical rejects already stored are left untouched so a
-- re-run changes nothing. $1 = batch (snapshot key).
INSERT OR REPLACE INTO rejects (dataset, item_id, stage, reason, batch, rejected_at)
WITH bad AS (
    SELECT
        'rating:' || coalesce(raw_sid, 'NULL') || ':' || coalesce(raw_iid, 'NULL') AS item_id,
        CASE status
            WHEN 'bad id' THEN 'bad id: sid ' || coalesce(raw_sid, 'NULL') || ', iid ' || coalesce(raw_iid, 'NULL')
                || ' are not integers'
            WHEN 'not a number' THEN 'not a number: rating ' || raw_rating
            WHEN 'out of range' THEN 'out of range: rating ' || raw_rating || ' is not an integer 1..10'
            WHEN 'unknown image' THEN 'unknown image: no images row with id ' || raw_iid
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
    WHERE x.dataset = 'sac' AND x.stage = 'ratings' AND x.item_id = l.item_id AND x.reason = l.reason
)
