/* zim_pin--1.1--1.2.sql: from 1.1 to 1.2 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION zim_pin UPDATE TO '1.2'" to load this file. \quit

-- zim_pin_backlog binds only to pg_catalog: in 1.0 and 1.1 it called
-- cardinality(), numeric / integer and make_interval(secs => numeric), each
-- of which an exact look-alike planted in the extension's schema before
-- CREATE EXTENSION or ALTER EXTENSION UPDATE would have beaten, to run with
-- the rights of whoever reads the view.
CREATE OR REPLACE VIEW @extschema@.zim_pin_backlog AS
SELECT pg_catalog.count(*) AS pending,
       pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) pg_catalog.min(enqueued_at) AS oldest_pending_age,
       coalesce(pg_catalog.sum(pg_catalog.ceil(pg_catalog.cardinality(conv_ids)::numeric
                               OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.max_convs_per_request'::text, true), '20'::text)::integer::numeric)),
                0::numeric)::bigint AS pending_requests,
       pg_catalog.make_interval(secs => (coalesce(pg_catalog.sum(pg_catalog.ceil(pg_catalog.cardinality(conv_ids)::numeric
                               OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.max_convs_per_request'::text, true), '20'::text)::integer::numeric)),
                0::numeric)
           OPERATOR(pg_catalog./) coalesce(pg_catalog.current_setting('zim_pin.requests_per_second'::text, true), '20'::text)::numeric)::double precision)
           AS expected_drain_time
FROM @extschema@.zim_pin_job
WHERE state OPERATOR(pg_catalog.=) 'pending'::text;
