\echo Use "ALTER EXTENSION fieldcrypt UPDATE TO '1.1'" to load this file. \quit

-- fieldcrypt 1.0 -> 1.1. Every section below has its twin at the end of
-- fieldcrypt--1.1.sql, so that a database made with 1.0 and updated ends up
-- with the same objects as one made with 1.1 (test/t/090_upgrade.pl checks).
