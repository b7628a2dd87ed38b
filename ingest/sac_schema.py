"""The tables of the public SAC SQLite file that the stage reads (ingest/sac.py), as DDL: what the sample drops
(ingest/sample_data.py) and the studio's snapshots (ingest/sac_studio.py) are written with."""

SAC_SCHEMA = """
CREATE TABLE generations (id INTEGER PRIMARY KEY, sid INTEGER, method TEXT, prompt TEXT, verified INTEGER);
CREATE TABLE images (id INTEGER PRIMARY KEY, gid INTEGER, idx INTEGER);
CREATE TABLE paths (iid INTEGER PRIMARY KEY, path TEXT);
CREATE TABLE ratings (sid INTEGER, iid INTEGER, rating INTEGER, verified INTEGER);
CREATE TABLE survey (id INTEGER PRIMARY KEY, qid INTEGER, rating INTEGER);
CREATE TABLE upscales (iid INTEGER, method TEXT);
"""
