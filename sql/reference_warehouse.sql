-- reference_warehouse.sql
--
-- The DostEducation warehouse computed *inside the source database*, in plain
-- set-based SQL written straight from the specification (issue 3, "Source
-- schema" and "Warehouse"). It shares no code with the pipeline's stages and
-- serves two purposes:
--   * the test oracle: the pipeline's dw.* tables must equal ref.* exactly;
--   * the benchmark's "in-database SQL" baseline (a dbt-style model: CTEs,
--     FILTER clauses, DISTINCT ON, hash joins; no correlated subquery per row).
--
-- Parameters (custom settings; set them in the same session before running):
--   SET ref.as_of = '2020-10-15';          -- closure date of the windows
--   SET ref.timezone = 'Asia/Kolkata';     -- local-date time zone
--   SET ref.min_listen_secs = '30';        -- a call completes its lesson at >= this
-- A missing parameter fails with "unrecognized configuration parameter".
--
-- Source tables are referenced unqualified (users, partner, experience,
-- programseq, campaign), i.e. through the caller's search_path.
-- Output: schema ref (dropped and recreated) with ref.partnerorg,
-- ref.programlist, ref.userprogram_fact, ref.engagement_metric. The only other
-- object is the temporary table pg_temp.ref_pair, dropped before the end.
--
-- No psql meta-commands and no transaction control: psql runs it statement by
-- statement, libpq PQexec of the whole file runs it as one transaction.
--
-- Rules (see the specification for the full text):
--   local date of ts       = (ts AT TIME ZONE timezone)::date
--   start date             = local date of program_start
--   month<n>date           = (start date + interval 'n month')::date  (PostgreSQL clamps
--                            to the end of a shorter month: 2020-01-31 + 1 month = 2020-02-29)
--   programenddate         = start date + programlist.duration_days, NULL without lessons
--   window with end E      = calls whose local call day d satisfies start date <= d < E
--   closed                 = E <= as_of; an open window (or E NULL) has NULL measures
--   provider number key    = right(regexp_replace(number, '\D', '', 'g'), 10); a number
--                            without digits (empty key) or NULL matches no partner -> 0;
--                            several partners with one key -> the lowest partner id

DROP SCHEMA IF EXISTS ref CASCADE;
CREATE SCHEMA ref;

------------------------------------------------------------------------------
-- 1. ref.partnerorg: every source partner plus (0, 'Direct', NULL).
------------------------------------------------------------------------------
CREATE TABLE ref.partnerorg (
    id              bigint PRIMARY KEY,
    name            text,
    provider_number text
);

INSERT INTO ref.partnerorg (id, name, provider_number)
SELECT 0::bigint, 'Direct'::text, NULL::text
UNION ALL
SELECT p.id::bigint, p.name::text, p.provider_number::text
FROM partner p;

------------------------------------------------------------------------------
-- 2. ref.programlist: per program present in programseq.
--    max_seq = max(sequence_index); lessons = number of programseq rows;
--    duration_days = max((week-1)*7 + day).
------------------------------------------------------------------------------
CREATE TABLE ref.programlist (
    program_id    int PRIMARY KEY,
    max_seq       int,
    lessons       int,
    duration_days int
);

INSERT INTO ref.programlist (program_id, max_seq, lessons, duration_days)
SELECT s.program_id::int,
       max(s.sequence_index)::int,
       count(*)::int,
       max((s.week - 1) * 7 + s.day)::int
FROM programseq s
WHERE s.program_id IS NOT NULL          -- a NULL program is no program
GROUP BY s.program_id;

ANALYZE ref.programlist;

------------------------------------------------------------------------------
-- 3. ref.userprogram_fact: one row per (user, program) with an experience,
--    for users present in users.
------------------------------------------------------------------------------
CREATE TABLE ref.userprogram_fact (
    user_id                  bigint NOT NULL,
    program_id               int    NOT NULL,
    created_on               timestamptz,
    program_start            timestamptz,
    month1date               date,
    month3date               date,
    month5date               date,
    programenddate           date,
    partnerorg_id            bigint,
    month1_completed_lessons int,
    month1_completed_minutes numeric(12,2),
    month3_completed_lessons int,
    month3_completed_minutes numeric(12,2),
    eop_completed_lessons    int,
    eop_completed_minutes    numeric(12,2),
    PRIMARY KEY (user_id, program_id)
);

-- 3a. The pairs: one row per (user, program), with the start date, the window
--     ends and the partner. Kept in a temporary table (like a materialised
--     dbt staging model) so the planner has real statistics for the big join
--     with campaign; dropped at the end of the script.
DROP TABLE IF EXISTS pg_temp.ref_pair;
CREATE TEMP TABLE ref_pair AS
WITH
params AS MATERIALIZED (
    SELECT current_setting('ref.timezone')::text AS tz
),
-- Partner lookup on the normalised provider number (digits only, last 10).
-- A number without any digit has an empty key and matches nothing.
-- Several partners with the same normalised number: the lowest partner id wins.
partner_key AS (
    SELECT DISTINCT ON (k.pkey) k.pkey, k.id AS partnerorg_id
    FROM (
        SELECT p.id::bigint AS id,
               NULLIF(right(regexp_replace(p.provider_number, '\D', '', 'g'), 10), '') AS pkey
        FROM partner p
    ) k
    WHERE k.pkey IS NOT NULL
    ORDER BY k.pkey, k.id
),
-- The earliest experience of each (user, program) pair, ties broken by the
-- lowest experience.id; only users present in users.
first_experience AS (
    SELECT DISTINCT ON (e.user_id, e.program_id)
           e.user_id::bigint              AS user_id,
           e.program_id::int              AS program_id,
           u.created_on                   AS created_on,
           e.created_on                   AS program_start,
           e.provider_number              AS provider_number
    FROM experience e
    JOIN users u ON u.id = e.user_id
    WHERE e.program_id IS NOT NULL
    ORDER BY e.user_id, e.program_id, e.created_on, e.id
),
started AS (
    SELECT f.*, (f.program_start AT TIME ZONE (SELECT tz FROM params))::date AS start_date
    FROM first_experience f
)
SELECT s.user_id,
       s.program_id,
       s.created_on,
       s.program_start,
       s.start_date,
       (s.start_date + interval '1 month')::date AS month1date,   -- clamps to month end
       (s.start_date + interval '3 month')::date AS month3date,
       (s.start_date + interval '5 month')::date AS month5date,
       s.start_date + pl.duration_days           AS programenddate,  -- NULL without lessons
       coalesce(pk.partnerorg_id, 0)::bigint     AS partnerorg_id
FROM started s
LEFT JOIN ref.programlist pl ON pl.program_id = s.program_id
LEFT JOIN partner_key pk
       ON pk.pkey = NULLIF(right(regexp_replace(s.provider_number, '\D', '', 'g'), 10), '');

ANALYZE pg_temp.ref_pair;

-- 3b. The fact rows: the pairs with their window measures.
INSERT INTO ref.userprogram_fact (
    user_id, program_id, created_on, program_start,
    month1date, month3date, month5date, programenddate, partnerorg_id,
    month1_completed_lessons, month1_completed_minutes,
    month3_completed_lessons, month3_completed_minutes,
    eop_completed_lessons, eop_completed_minutes)
WITH
-- The parameters, read once: referenced only through scalar subqueries
-- (InitPlans, evaluated once per statement, not per row).
params AS MATERIALIZED (
    SELECT current_setting('ref.as_of')::date          AS as_of,
           current_setting('ref.timezone')::text       AS tz,
           current_setting('ref.min_listen_secs')::int AS min_secs
),
-- Calls: campaign rows with a call_start_time; d = local call day.
-- OFFSET 0 keeps this subquery from being flattened into call_agg, so the
-- time-zone conversion runs once per call instead of once per reference
-- (the join filter and six FILTER clauses).
pair_call AS (
    SELECT c.user_id::bigint AS user_id,
           c.program_id::int AS program_id,
           c.programseq_id,
           c.listen_secs,
           (c.call_start_time AT TIME ZONE (SELECT tz FROM params))::date AS d
    FROM campaign c
    WHERE c.call_start_time IS NOT NULL
    OFFSET 0
),
-- Per pair: only the pair's user_id and program_id link a call to it (the
-- inner join drops orphan calls); a window with end E holds the calls with
-- start date <= d < E (E NULL: no call).
call_agg AS (
    SELECT pr.user_id, pr.program_id,
           -- completed lessons: distinct non-NULL programseq_id (count(DISTINCT)
           -- ignores NULL) among the window's calls with listen_secs >= min
           -- (NULL listen_secs never qualifies); retries count once.
           count(DISTINCT c.programseq_id) FILTER (WHERE c.d < pr.month1date     AND c.listen_secs >= (SELECT min_secs FROM params)) AS m1_lessons,
           count(DISTINCT c.programseq_id) FILTER (WHERE c.d < pr.month3date     AND c.listen_secs >= (SELECT min_secs FROM params)) AS m3_lessons,
           count(DISTINCT c.programseq_id) FILTER (WHERE c.d < pr.programenddate AND c.listen_secs >= (SELECT min_secs FROM params)) AS eop_lessons,
           -- listened seconds, negative or NULL counting as 0.
           sum(greatest(coalesce(c.listen_secs, 0), 0)) FILTER (WHERE c.d < pr.month1date)     AS m1_secs,
           sum(greatest(coalesce(c.listen_secs, 0), 0)) FILTER (WHERE c.d < pr.month3date)     AS m3_secs,
           sum(greatest(coalesce(c.listen_secs, 0), 0)) FILTER (WHERE c.d < pr.programenddate) AS eop_secs
    FROM ref_pair pr
    JOIN pair_call c ON c.user_id = pr.user_id AND c.program_id = pr.program_id
    WHERE c.d >= pr.start_date
    GROUP BY pr.user_id, pr.program_id
)
SELECT pr.user_id,
       pr.program_id,
       pr.created_on,
       pr.program_start,
       pr.month1date,
       pr.month3date,
       pr.month5date,
       pr.programenddate,
       pr.partnerorg_id,
       -- A window is closed when E <= as_of; open (or E NULL) -> NULL measures.
       CASE WHEN pr.month1date <= (SELECT as_of FROM params)
            THEN coalesce(a.m1_lessons, 0) END::int                                AS month1_completed_lessons,
       CASE WHEN pr.month1date <= (SELECT as_of FROM params)
            THEN round(coalesce(a.m1_secs, 0) / 60.0, 2) END::numeric(12,2)         AS month1_completed_minutes,
       CASE WHEN pr.month3date <= (SELECT as_of FROM params)
            THEN coalesce(a.m3_lessons, 0) END::int                                AS month3_completed_lessons,
       CASE WHEN pr.month3date <= (SELECT as_of FROM params)
            THEN round(coalesce(a.m3_secs, 0) / 60.0, 2) END::numeric(12,2)         AS month3_completed_minutes,
       CASE WHEN pr.programenddate <= (SELECT as_of FROM params)
            THEN coalesce(a.eop_lessons, 0) END::int                               AS eop_completed_lessons,
       CASE WHEN pr.programenddate <= (SELECT as_of FROM params)
            THEN round(coalesce(a.eop_secs, 0) / 60.0, 2) END::numeric(12,2)        AS eop_completed_minutes
FROM ref_pair pr
LEFT JOIN call_agg a ON a.user_id = pr.user_id AND a.program_id = pr.program_id;

DROP TABLE pg_temp.ref_pair;

ANALYZE ref.userprogram_fact;

------------------------------------------------------------------------------
-- 4. ref.engagement_metric: the rollup of the fact rows per
--    (partnerorg_id, program_id, cohort_month, window_name); every group with
--    at least one fact row has all three windows.
------------------------------------------------------------------------------
CREATE TABLE ref.engagement_metric (
    partnerorg_id bigint NOT NULL,
    program_id    int    NOT NULL,
    cohort_month  date   NOT NULL,
    window_name   text   NOT NULL,
    users         int,
    users_closed  int,
    avg_lessons   numeric(12,2),
    avg_minutes   numeric(12,2),
    high          int,
    medium        int,
    low           int,
    very_low      int,
    PRIMARY KEY (partnerorg_id, program_id, cohort_month, window_name)
);

INSERT INTO ref.engagement_metric (
    partnerorg_id, program_id, cohort_month, window_name,
    users, users_closed, avg_lessons, avg_minutes,
    high, medium, low, very_low)
WITH
params AS MATERIALIZED (
    SELECT current_setting('ref.as_of')::date    AS as_of,
           current_setting('ref.timezone')::text AS tz
),
-- Unpivot: one row per fact row and window; span = E - start date (days).
fact_window AS (
    SELECT f.partnerorg_id,
           f.program_id,
           date_trunc('month', s.start_date::timestamp)::date AS cohort_month,
           w.window_name,
           w.e - s.start_date                                 AS span,
           (w.e <= pa.as_of) IS TRUE                          AS closed,
           w.lessons,
           w.minutes
    FROM ref.userprogram_fact f
    CROSS JOIN params pa
    CROSS JOIN LATERAL (SELECT (f.program_start AT TIME ZONE pa.tz)::date AS start_date) s
    CROSS JOIN LATERAL (VALUES
        ('month1'::text, f.month1date,     f.month1_completed_lessons, f.month1_completed_minutes),
        ('month3'::text, f.month3date,     f.month3_completed_lessons, f.month3_completed_minutes),
        ('eop'::text,    f.programenddate, f.eop_completed_lessons,    f.eop_completed_minutes)
    ) AS w(window_name, e, lessons, minutes)
),
-- scheduled(program, span) = the program's lessons whose day offset
-- (week-1)*7 + (day-1) is < span. Computed once per distinct (program, span)
-- of a closed row (spans take few values: month lengths and duration_days),
-- not once per fact row. A NULL span (E NULL) is never closed.
span AS (
    SELECT DISTINCT fw.program_id, fw.span
    FROM fact_window fw
    WHERE fw.closed
),
scheduled AS (
    SELECT sp.program_id, sp.span, count(ps.program_id)::bigint AS scheduled
    FROM span sp
    LEFT JOIN programseq ps
           ON ps.program_id = sp.program_id
          AND (ps.week - 1) * 7 + (ps.day - 1) < sp.span
    GROUP BY sp.program_id, sp.span
),
-- Engagement level of a closed row with scheduled > 0, ratio lessons/scheduled
-- compared exactly in integers: >= 1/2 high, >= 1/4 medium, >= 1/20 low,
-- else very_low. Other rows have no level.
leveled AS (
    SELECT fw.partnerorg_id, fw.program_id, fw.cohort_month, fw.window_name,
           fw.closed, fw.lessons, fw.minutes,
           CASE WHEN fw.closed AND sc.scheduled > 0 THEN
               CASE WHEN  2::bigint * fw.lessons >= sc.scheduled THEN 'high'
                    WHEN  4::bigint * fw.lessons >= sc.scheduled THEN 'medium'
                    WHEN 20::bigint * fw.lessons >= sc.scheduled THEN 'low'
                    ELSE 'very_low' END
           END AS level
    FROM fact_window fw
    LEFT JOIN scheduled sc ON sc.program_id = fw.program_id AND sc.span = fw.span
)
SELECT l.partnerorg_id,
       l.program_id,
       l.cohort_month,
       l.window_name,
       count(*)::int                                                    AS users,
       count(*) FILTER (WHERE l.closed)::int                            AS users_closed,
       round(avg(l.lessons) FILTER (WHERE l.closed), 2)::numeric(12,2)  AS avg_lessons,
       round(avg(l.minutes) FILTER (WHERE l.closed), 2)::numeric(12,2)  AS avg_minutes,
       count(*) FILTER (WHERE l.level = 'high')::int                    AS high,
       count(*) FILTER (WHERE l.level = 'medium')::int                  AS medium,
       count(*) FILTER (WHERE l.level = 'low')::int                     AS low,
       count(*) FILTER (WHERE l.level = 'very_low')::int                AS very_low
FROM leveled l
GROUP BY l.partnerorg_id, l.program_id, l.cohort_month, l.window_name;

ANALYZE ref.engagement_metric;
