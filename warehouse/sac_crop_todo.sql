-- Images of the snapshot without a crop yet (new ones, and earlier rejects worth retrying); image rows
-- whose id is not an integer are among them (they become rejects).
CREATE OR REPLACE TEMP TABLE sac_crop_todo AS
SELECT s.iid, s.bad_id
FROM sac_snap_images s
-- Compared as integers (SAC image_ids are written as str(iid)): a third of the time of matching 1M strings.
-- A NULL iid matches nothing, so ids that are not integers stay.
ANTI JOIN (SELECT TRY_CAST(i.image_id AS BIGINT) AS iid FROM images i WHERE i.dataset = 'sac') c ON c.iid = s.iid
