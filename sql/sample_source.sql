-- Deterministic, seeded sample data for the Dost Education *source* database.
--
--   psql -X -v ON_ERROR_STOP=1 -q -v users=2000 -v seed=42 -d CONNINFO -f sql/sample_source.sql
--
-- (Re)creates users, partner, experience, programseq and campaign in schema public
-- (scripts/sample-data is the friendly wrapper). The same (users, seed) always gives
-- byte-identical tables: no random() is used; every "random" number is a hash of
-- (seed, entity key, purpose), and every generated id comes from a sort on a total order.
-- Everything runs in one transaction, so a failed run leaves the previous data intact.
--
-- The data deliberately carries every quirk listed under "Data as it really comes
-- must not break it" in the warehouse specification, each at a small but non-zero rate.

\if :{?users}
\else
  \set users 2000
\endif
\if :{?seed}
\else
  \set seed 42
\endif

-- Parallel plans would not change the result (nothing depends on row order), but the
-- generator must not depend on what a server's settings happen to be.
SET max_parallel_workers_per_gather = 0;
SET client_min_messages = warning;
-- One big sort (campaign ids) and a few index builds: give them memory.
SET work_mem = '256MB';
SET maintenance_work_mem = '512MB';
-- All wall-clock arithmetic below names its zone explicitly; UTC here only makes any
-- accidental text conversion predictable.
SET TimeZone = 'UTC';

BEGIN;

-- Fail early, with psql's own error, if a parameter is not an integer.
SELECT (:'users')::int AS users, (:'seed')::int AS seed \gset p_

------------------------------------------------------------------------------------
-- Helpers (temporary: they vanish with the session and leave the source clean).
------------------------------------------------------------------------------------

-- Uniform pseudo-random number in [0, 1) for (seed, a, b). `a` is an entity key
-- (user, pair, ...), `b` a purpose code (< 1,000,003 so that streams of different
-- seeds never overlap). Pure function of its arguments, hence plan-independent.
CREATE FUNCTION pg_temp.sample_rand(seed int, a bigint, b int) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT (hashint8extended(a, seed::bigint * 1000003 + b) & 9007199254740991)::double precision
         / 9007199254740992.0
$$;

-- A 10-digit phone number written the many ways people and systems write it.
-- All formats keep the same last 10 digits, which is what the pipeline must match on.
CREATE FUNCTION pg_temp.fmt_number(d text, f int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE f
    WHEN 0 THEN d                                                     -- 8047100037
    WHEN 1 THEN '0' || d                                              -- 08047100037
    WHEN 2 THEN '+91' || d                                            -- +918047100037
    WHEN 3 THEN '+91 ' || substr(d, 1, 2) || ' ' || substr(d, 3, 4) || ' ' || substr(d, 7, 4)
    WHEN 4 THEN '91-' || substr(d, 1, 5) || '-' || substr(d, 6, 5)   -- 91-80471-00037
    WHEN 5 THEN '(' || substr(d, 1, 3) || ') ' || substr(d, 4, 3) || '-' || substr(d, 7, 4)
    WHEN 6 THEN '0091 ' || d                                          -- international prefix
    ELSE ' ' || d || ' '                                              -- stray whitespace
  END
$$;

-- The last 10 digits of partner k (1..6), for building experience numbers.
CREATE FUNCTION pg_temp.partner_digits(k int) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT (ARRAY['8047100037', '2261234501', '1140558812',
                '9820012345', '7045600789', '4023456789'])[k]
$$;

-- Partner 1..6 drawn with realistic (unequal) weights from a uniform number.
CREATE FUNCTION pg_temp.partner_pick(x double precision) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN x < 0.30 THEN 1 WHEN x < 0.50 THEN 2 WHEN x < 0.65 THEN 3
              WHEN x < 0.80 THEN 4 WHEN x < 0.92 THEN 5 ELSE 6 END
$$;

------------------------------------------------------------------------------------
-- Fresh tables. No CASCADE: if something depends on them, better to stop than to
-- silently drop someone's view.
------------------------------------------------------------------------------------
DROP TABLE IF EXISTS public.campaign, public.experience, public.programseq,
                     public.partner, public.users;

-- Real tables have more columns than the pipeline needs; the extra ones (name,
-- language, created_on, status) sit between the needed ones on purpose, so that
-- positional reads would break.
CREATE TABLE public.users (
  id          bigint NOT NULL,
  name        text,
  created_on  timestamptz,
  language    text
);
CREATE TABLE public.partner (
  id               bigint NOT NULL,
  name             text,
  created_on       timestamptz,
  provider_number  text
);
CREATE TABLE public.experience (
  id               bigint NOT NULL,
  user_id          bigint,
  program_id       int,
  provider_number  text,
  phone            text,
  created_on       timestamptz
);
CREATE TABLE public.programseq (
  id              bigint NOT NULL,
  program_id      int,
  sequence_index  int,
  week            int,
  day             int,
  title           text
);
CREATE TABLE public.campaign (
  id                   bigint NOT NULL,
  experience_id        bigint,
  program_id           int,
  user_id              bigint,
  status               text,
  listen_secs          int,
  attempted_timestamp  timestamptz,
  call_start_time      timestamptz,
  call_end_time        timestamptz,
  programseq_id        bigint
);

------------------------------------------------------------------------------------
-- Partners: six real ones, each number in a different house style, plus one whose
-- line is not assigned yet (NULL number). Last 10 digits are pairwise distinct.
------------------------------------------------------------------------------------
INSERT INTO public.partner (id, name, created_on, provider_number) VALUES
  (1, 'Pratham Education Foundation',  '2019-05-02 09:14:07.482113+00', '+91 80 4710 0037'),
  (2, 'Rocket Learning',               '2019-05-20 11:02:44.019552+00', '022-6123-4501'),
  (3, 'Mumbai Mobile Creches',         '2019-07-08 06:41:19.773410+00', '(011) 4055 8812'),
  (4, 'SNEHA',                         '2019-09-16 10:27:58.300071+00', '+91-9820012345'),
  (5, 'Akanksha Foundation',           '2019-11-11 08:55:31.651902+00', '7045 600 789'),
  (6, 'Kaivalya Education Foundation', '2020-01-23 12:30:05.128846+00', '91 (40) 2345-6789'),
  (7, 'Pilot partner (line pending)',  '2020-08-30 07:12:40.994318+00', NULL);

------------------------------------------------------------------------------------
-- Programs and their lessons.
--   1, 2: 112 lessons, 5 lessons a week (weeks 1..23); weekends are retry days.
--   3:    112 lessons, 7 a week (weeks 1..16).
--   5:    112 lessons, 5 a week, but every 4th week's day 5 carries two lessons
--         (duplicate day offsets).
--   4:    a small 10-lesson program (2 weeks): it ends long before month 1.
--   9:    has sign-ups and calls but NO programseq rows (its lessons were removed);
--         its calls still carry the old, now dangling, programseq ids.
--   6:    nobody signed up for it; it only appears in stray calls.
------------------------------------------------------------------------------------
CREATE TEMP TABLE prog (program_id int, title text, per_week int, lessons int,
                        dup_week int, call_days int);
INSERT INTO prog VALUES
  (1, 'Dost Hindi 0-3',          5, 112, NULL, NULL),
  (2, 'Dost Kannada 0-3',        5, 112, NULL, NULL),
  (3, 'Dost Toddler Daily',      7, 112, NULL, NULL),
  (5, 'Dost Preschool Plus',     5, 112, 4,    NULL),
  (4, 'Dost Summer Mini',        5, 10,  NULL, NULL),
  (9, 'Dost Radio Pilot',        0, 0,   NULL, 140);

-- Lesson slots in calendar order; a duplicated day contributes two slots. Ids are
-- interleaved across programs (ordered by sequence_index first), as an
-- auto-increment over lessons authored side by side would leave them.
INSERT INTO public.programseq (id, program_id, sequence_index, week, day, title)
SELECT 10000 + row_number() OVER (ORDER BY seq, program_id), program_id, seq, week, day,
       title || ' - lesson ' || seq
FROM (
  SELECT p.program_id, p.title, p.lessons, w AS week, d AS day,
         row_number() OVER (PARTITION BY p.program_id ORDER BY w, d, c) AS seq
  FROM prog p
  CROSS JOIN generate_series(1, 30) w
  CROSS JOIN LATERAL generate_series(1, p.per_week) d
  CROSS JOIN LATERAL generate_series(1, CASE WHEN w % p.dup_week = 0 AND d = p.per_week
                                             THEN 2 ELSE 1 END) c
) s
WHERE seq <= lessons;

-- How long each program keeps calling: its last lesson's day offset + 1 (program 9
-- has no lessons left, so its length is stated in prog.call_days).
UPDATE prog p SET call_days = coalesce(p.call_days, s.last_offset + 1)
FROM (SELECT p2.program_id, max((q.week - 1) * 7 + q.day - 1) AS last_offset
      FROM prog p2 LEFT JOIN public.programseq q USING (program_id)
      GROUP BY p2.program_id) s
WHERE s.program_id = p.program_id;

-- What gets called on day k (0 = start date) of each program:
--  * a lesson day: that day's lesson(s) (two on duplicated days, lslot 0 and 1);
--  * a day without a lesson (weekends, the days after the last lesson): a retry of
--    the most recent earlier lesson;
--  * days -2 and -1: a welcome call before the start date, on lesson 1 or on none;
--  * program 9: dangling ids of its deleted lessons (weekend retries: NULL).
CREATE TEMP TABLE sched AS
WITH lesson AS (
  SELECT program_id, (week - 1) * 7 + day - 1 AS k, id, sequence_index
  FROM public.programseq
)
SELECT l.program_id, l.k,
       (row_number() OVER (PARTITION BY l.program_id, l.k ORDER BY l.sequence_index) - 1)::int AS lslot,
       l.id AS programseq_id
FROM lesson l
UNION ALL
SELECT p.program_id, k, 0,
       CASE WHEN p.lessons = 0 THEN
              CASE WHEN k % 7 < 5 THEN 990000 + p.program_id * 1000 + k END
            ELSE (SELECT l.id FROM lesson l
                  WHERE l.program_id = p.program_id AND l.k < g.k
                  ORDER BY l.k DESC, l.sequence_index DESC LIMIT 1)
       END
FROM prog p
CROSS JOIN LATERAL generate_series(0, p.call_days + 10) g(k)
WHERE NOT EXISTS (SELECT 1 FROM lesson l WHERE l.program_id = p.program_id AND l.k = g.k)
UNION ALL
SELECT p.program_id, k, 0,
       CASE WHEN k = -1 THEN (SELECT l.id FROM lesson l
                              WHERE l.program_id = p.program_id AND l.sequence_index = 1) END
FROM prog p CROSS JOIN generate_series(-2, -1) k;
CREATE INDEX ON sched (program_id, k);
ANALYZE sched;

------------------------------------------------------------------------------------
-- Users. First sign-up times grow over 2019-06-21..2020-09-30 (more users later);
-- mostly during Indian daytime, 15% at any hour (so some UTC 18:30-23:59 starts,
-- which are the next local day in Asia/Kolkata); 1.5% forced onto month ends
-- (29th-31st, including 2020-01-31 whose +1 month clamps to Feb 29).
------------------------------------------------------------------------------------
CREATE TEMP TABLE u AS
SELECT i AS user_id,
       -- 0.4% of users were deleted later: their experiences and calls remain
       pg_temp.sample_rand(:p_seed, i, 5) < 0.004 AS deleted,
       -- 0.5% registered but never enrolled in a program
       pg_temp.sample_rand(:p_seed, i, 8) < 0.005 AS never_enrolled,
       first_start,
       -- account created shortly before the first sign-up: minutes, hours or days
       first_start - CASE WHEN x < 0.6 THEN 30 + pg_temp.sample_rand(:p_seed, i, 12) * 1170
                          WHEN x < 0.9 THEN 3600 + pg_temp.sample_rand(:p_seed, i, 12) * 169200
                          ELSE 172800 + pg_temp.sample_rand(:p_seed, i, 12) * 1555200 END
                     * interval '1 second' AS created_on,
       -- how the user reached Dost: 35% direct (NULL number), 55% via a partner,
       -- 10% via a number that is no partner's
       CASE WHEN pv >= 0.35 AND pv < 0.90
            THEN pg_temp.partner_pick(pg_temp.sample_rand(:p_seed, i, 11)) END AS partner_k,
       CASE WHEN pv >= 0.90 THEN
         (ARRAY['+91 90 4710 0037',  -- one digit off partner 1: no match
                '1800-123-4567',     -- toll-free line
                '080 2222 3333',     -- some other landline
                '4710 0037',         -- truncated: only 8 digits
                ''])                 -- empty rather than NULL
         [1 + floor(pg_temp.sample_rand(:p_seed, i, 13) * 5)::int] END AS other_number,
       '9' || lpad(floor(pg_temp.sample_rand(:p_seed, i, 14) * 1e9)::bigint::text, 9, '0') AS phone
FROM (
  SELECT i, x, pv,
         ((CASE WHEN pg_temp.sample_rand(:p_seed, i, 4) < 0.015
                THEN (ARRAY[date '2019-08-31', '2019-10-31', '2019-11-30', '2019-12-31',
                            '2020-01-29', '2020-01-30', '2020-01-31', '2020-03-31',
                            '2020-05-31', '2020-07-31'])
                     [1 + floor(pg_temp.sample_rand(:p_seed, i, 6) * 10)::int]
                ELSE date '2019-06-21'
                     + floor(sqrt(pg_temp.sample_rand(:p_seed, i, 1)) * 468)::int END)::timestamp
           + CASE WHEN pg_temp.sample_rand(:p_seed, i, 2) < 0.85
                  THEN 25200 + pg_temp.sample_rand(:p_seed, i, 3) * 54000   -- 07:00-22:00 local
                  ELSE pg_temp.sample_rand(:p_seed, i, 3) * 86400 END       -- any time
             * interval '1 second') AT TIME ZONE 'Asia/Kolkata' AS first_start
  FROM (SELECT i, pg_temp.sample_rand(:p_seed, i, 9) AS x,
               pg_temp.sample_rand(:p_seed, i, 10) AS pv
        FROM generate_series(1, :p_users) i) g
) s;

INSERT INTO public.users (id, name, created_on, language)
SELECT user_id,
       (ARRAY['Asha', 'Priya', 'Sunita', 'Rekha', 'Kavita', 'Meena', 'Anil', 'Ravi',
              'Lakshmi', 'Fatima', 'Geeta', 'Suresh'])[1 + (user_id % 12)::int]
         || ' ' || (ARRAY['Devi', 'Kumar', 'Patil', 'Shaikh', 'Reddy', 'Gowda', 'Singh'])
                   [1 + (user_id / 12 % 7)::int],
       created_on,
       (ARRAY['hi', 'kn', 'mr', 'en'])[1 + floor(pg_temp.sample_rand(:p_seed, user_id, 15) * 4)::int]
FROM u
WHERE NOT deleted;

------------------------------------------------------------------------------------
-- (user, program) pairs: every enrolled user has one program, 20% a second one that
-- starts 20..250 days later. Pairs starting after the data snapshot (2020-12-15) are
-- dropped. Per pair we fix its calling behaviour:
--   pa     chance of answering (6% "ghost" pairs almost never answer);
--   decay  how much answering fades towards the end of the program;
--   pf     chance an answered call is listened to for 30 s or more;
--   slot   local time of day of the daily call, 08:00-19:00 (+ up to 15 min); 2% are
--          called at 23:58:30-00:01:00 local (18:28:30-18:31:00 UTC), so their
--          calls straddle local midnight;
--   days   how many days the pair is called: 60% to the end (+0..4 days of
--          retries), the rest drop out part-way; capped at the snapshot;
--   pre    5% get one or two welcome calls before their start date.
------------------------------------------------------------------------------------
CREATE TEMP TABLE pair AS
WITH base AS (
  SELECT u.user_id, u.partner_k, u.other_number, u.phone, 0 AS slot,
         u.user_id * 2 AS pair_id,
         CASE WHEN x < 0.33 THEN 1 WHEN x < 0.56 THEN 2 WHEN x < 0.76 THEN 3
              WHEN x < 0.90 THEN 5 WHEN x < 0.96 THEN 4 ELSE 9 END AS program_id,
         u.first_start AS start_ts
  FROM u CROSS JOIN LATERAL (SELECT pg_temp.sample_rand(:p_seed, u.user_id, 20) AS x) r
  WHERE NOT u.never_enrolled
), second AS (
  SELECT b.user_id,
         -- the second program comes through the same partner 60% of the time
         CASE WHEN y < 0.60 THEN b.partner_k
              WHEN y < 0.85 THEN NULL
              ELSE pg_temp.partner_pick(pg_temp.sample_rand(:p_seed, b.user_id, 23)) END,
         CASE WHEN y < 0.60 THEN b.other_number END,
         b.phone, 1, b.user_id * 2 + 1,
         -- a different program among 1, 2, 3, 5
         (ARRAY[1, 2, 3, 5])[1 + ((array_position(ARRAY[1, 2, 3, 5], b.program_id)
                                   + floor(pg_temp.sample_rand(:p_seed, b.user_id, 22) * 3)::int)
                                  % 4)],
         b.start_ts + (20 + pg_temp.sample_rand(:p_seed, b.user_id, 24) * 230) * interval '1 day'
  FROM base b CROSS JOIN LATERAL (SELECT pg_temp.sample_rand(:p_seed, b.user_id, 25) AS y) r
  WHERE pg_temp.sample_rand(:p_seed, b.user_id, 21) < 0.20
), pairs AS (
  SELECT * FROM base UNION ALL SELECT * FROM second
)
SELECT s.*,
       least(s.days_wanted, date '2020-12-15' - s.start_local) AS days
FROM (
  SELECT p.*, (p.start_ts AT TIME ZONE 'Asia/Kolkata')::date AS start_local,
         CASE WHEN g < 0.06 THEN 0.03 ELSE 0.55 + 0.44 * e END AS pa,
         pg_temp.sample_rand(:p_seed, p.pair_id, 32) * 0.5 AS decay,
         CASE WHEN g < 0.06 THEN 0.1
              ELSE 0.15 + 0.8 * (0.7 * e + 0.3 * pg_temp.sample_rand(:p_seed, p.pair_id, 33)) END AS pf,
         CASE WHEN pg_temp.sample_rand(:p_seed, p.pair_id, 34) < 0.02 THEN 86310.0
              ELSE 28800 + pg_temp.sample_rand(:p_seed, p.pair_id, 35) * 39600 END AS slot_secs,  -- 08:00-19:00
         CASE WHEN pg_temp.sample_rand(:p_seed, p.pair_id, 34) < 0.02 THEN 150.0
              ELSE 900.0 END AS jitter,
         CASE WHEN pg_temp.sample_rand(:p_seed, p.pair_id, 36) < 0.60
              THEN pr.call_days + floor(pg_temp.sample_rand(:p_seed, p.pair_id, 37) * 5)::int
              ELSE 1 + floor(pg_temp.sample_rand(:p_seed, p.pair_id, 37) * pr.call_days)::int
         END AS days_wanted,
         CASE WHEN pg_temp.sample_rand(:p_seed, p.pair_id, 38) < 0.05
              THEN 1 + floor(pg_temp.sample_rand(:p_seed, p.pair_id, 39) * 2)::int ELSE 0 END AS pre
  FROM pairs p
  JOIN prog pr USING (program_id)
  CROSS JOIN LATERAL (SELECT pg_temp.sample_rand(:p_seed, p.pair_id, 30) AS g,
                             pg_temp.sample_rand(:p_seed, p.pair_id, 31) AS e) r
) s
WHERE s.start_local < date '2020-12-15';

------------------------------------------------------------------------------------
-- Experience rows: one per sign-up or phone change.
--   kind 0  the sign-up (its provider number in some other format than the
--           partner's own);
--   kind 1  15% change phone 5..150 days later (same partner in yet another format
--           70%, NULL 15%, another partner 15%: only the earliest row counts);
--   kind 2  3% change phone a second time;
--   kind 3  1.5% have a second row with exactly the same created_on (a tie) and a
--           different provider number, so the lowest-id rule decides;
--   kind 4  1% have a back-filled row 1 hour..3 days BEFORE the sign-up, with a
--           different provider number, inserted late (highest ids), so the earliest
--           row is not the lowest id.
------------------------------------------------------------------------------------
CREATE TEMP TABLE exp_rows AS
SELECT p.pair_id, p.user_id, p.program_id, k.kind,
       CASE k.kind
         WHEN 0 THEN p.start_ts
         WHEN 1 THEN p.start_ts + (5 + pg_temp.sample_rand(:p_seed, p.pair_id, 41) * 145) * interval '1 day'
         WHEN 2 THEN p.start_ts + (151 + pg_temp.sample_rand(:p_seed, p.pair_id, 42) * 30) * interval '1 day'
         WHEN 3 THEN p.start_ts
         ELSE p.start_ts - (3600 + pg_temp.sample_rand(:p_seed, p.pair_id, 43) * 255600) * interval '1 second'
       END AS created_on,
       CASE
         WHEN k.kind IN (0, 2) OR (k.kind = 1 AND z < 0.70) THEN
           coalesce(pg_temp.fmt_number(pg_temp.partner_digits(p.partner_k), floor(z2 * 8)::int),
                    p.other_number)
         WHEN k.kind = 1 AND z < 0.85 THEN NULL
         WHEN k.kind IN (3, 4) AND p.partner_k IS NOT NULL AND z < 0.5 THEN NULL
         ELSE pg_temp.fmt_number(
                pg_temp.partner_digits(
                  1 + (coalesce(p.partner_k, 0)
                       + floor(pg_temp.sample_rand(:p_seed, p.pair_id, 46 + k.kind) * 5)::int) % 6),
                floor(z2 * 8)::int)
       END AS provider_number,
       CASE WHEN k.kind IN (1, 2)
            THEN '9' || lpad(floor(pg_temp.sample_rand(:p_seed, p.pair_id, 50 + k.kind) * 1e9)::bigint::text, 9, '0')
            ELSE p.phone END AS phone,
       k.kind = 4 AS late,
       pg_temp.sample_rand(:p_seed, p.pair_id, 60 + k.kind) AS tiebreak
FROM pair p
CROSS JOIN LATERAL (VALUES (0), (1), (2), (3), (4)) k(kind)
CROSS JOIN LATERAL (SELECT pg_temp.sample_rand(:p_seed, p.pair_id, 70 + k.kind) AS z,
                           pg_temp.sample_rand(:p_seed, p.pair_id, 80 + k.kind) AS z2) r
WHERE k.kind = 0
   OR (k.kind = 1 AND pg_temp.sample_rand(:p_seed, p.pair_id, 40) < 0.15)
   OR (k.kind = 2 AND pg_temp.sample_rand(:p_seed, p.pair_id, 40) < 0.03)
   OR (k.kind = 3 AND pg_temp.sample_rand(:p_seed, p.pair_id, 44) < 0.015)
   OR (k.kind = 4 AND pg_temp.sample_rand(:p_seed, p.pair_id, 45) < 0.01);

-- Ids follow insertion order: created_on, except the late back-fills at the end.
-- Ties on created_on are broken by a hash, so either row of a tie may get the lower id.
CREATE TEMP TABLE exp_ids AS
SELECT e.*, 500000 + row_number() OVER (ORDER BY late, created_on, tiebreak, pair_id, kind) AS id
FROM exp_rows e;

INSERT INTO public.experience (id, user_id, program_id, provider_number, phone, created_on)
SELECT id, user_id, program_id, provider_number, phone, created_on
FROM exp_ids;

-- Which experience row a call belongs to: the sign-up row, then the phone change(s).
ALTER TABLE pair ADD COLUMN e0 bigint, ADD COLUMN e1 bigint, ADD COLUMN e1_at timestamptz,
                 ADD COLUMN e2 bigint, ADD COLUMN e2_at timestamptz;
UPDATE pair p
SET e0 = x.e0, e1 = x.e1, e1_at = x.e1_at, e2 = x.e2, e2_at = x.e2_at
FROM (SELECT pair_id,
             max(id) FILTER (WHERE kind = 0) AS e0,
             max(id) FILTER (WHERE kind = 1) AS e1, max(created_on) FILTER (WHERE kind = 1) AS e1_at,
             max(id) FILTER (WHERE kind = 2) AS e2, max(created_on) FILTER (WHERE kind = 2) AS e2_at
      FROM exp_ids GROUP BY pair_id) x
WHERE x.pair_id = p.pair_id;
ANALYZE pair;

------------------------------------------------------------------------------------
-- Campaign: one call attempt per pair per day from (a little before) the start
-- date, for the lesson(s) scheduled that day or a retry of the latest one; an
-- unanswered first attempt is retried 2-4 hours later 35% of the time. Per attempt:
--   answered       ~70% overall, fading over the program for most pairs;
--   unanswered     call_start/end NULL; listen_secs NULL (68%), 0 (30%), or a
--                  bogus positive value (2%);
--   answered       call_start 2-27 s after attempted_timestamp; listen_secs 30-120
--                  (1% up to 400) with chance pf, else 0-29; 1% NULL, 0.7% negative;
--                  call_end = call_start + listen_secs;
--   programseq_id  NULL for 2% of attempts;
--   late arrival   0.5% of rows are inserted late: highest ids, old timestamps.
-- Plus stray calls matching no experience pair (2.5% of users): in program 6 which
-- nobody joined, or from user ids that do not exist.
-- The OFFSET 0 fences keep each layer's hash values computed once per row (without
-- them the planner would flatten the layers and repeat the expressions).
------------------------------------------------------------------------------------
INSERT INTO public.campaign (id, experience_id, program_id, user_id, status, listen_secs,
                             attempted_timestamp, call_start_time, call_end_time, programseq_id)
SELECT 1000000 + row_number() OVER (ORDER BY late, attempted_timestamp, user_id, program_id, k, lslot, att),
       experience_id, program_id, user_id,
       CASE WHEN call_start_time IS NULL
            THEN CASE WHEN h < 0.75 THEN 'no-answer' WHEN h < 0.95 THEN 'busy' ELSE 'failed' END
            ELSE 'completed' END,
       listen_secs, attempted_timestamp, call_start_time,
       call_start_time + listen_secs * interval '1 second',
       programseq_id
FROM (
  -- per attempt: outcome, listening, lesson, lateness, experience row
  SELECT c.*,
         CASE WHEN c.answered
              THEN c.attempted_timestamp + (2 + pg_temp.sample_rand(:p_seed, c.pair_id, c.b + 3) * 25) * interval '1 second'
         END AS call_start_time,
         CASE WHEN c.answered THEN
                CASE WHEN c.l < 0.010 THEN NULL
                     WHEN c.l < 0.017 THEN -(1 + floor(c.l2 * 30)::int)
                     WHEN c.l2 < c.pf THEN
                       CASE WHEN c.l3 < 0.01 THEN 121 + floor(c.l4 * 280)::int
                            ELSE 30 + floor(c.l4 * 91)::int END
                     ELSE floor(c.l4 * 30)::int END
              ELSE
                CASE WHEN c.l < 0.68 THEN NULL WHEN c.l < 0.98 THEN 0
                     ELSE 1 + floor(c.l4 * 90)::int END
         END AS listen_secs,
         CASE WHEN pg_temp.sample_rand(:p_seed, c.pair_id, c.b + 8) < 0.02 THEN NULL
              ELSE c.sched_id END AS programseq_id,
         pg_temp.sample_rand(:p_seed, c.pair_id, c.b + 9) < 0.005 AS late,
         pg_temp.sample_rand(:p_seed, c.pair_id, c.b + 2) AS h,
         CASE WHEN c.e2 IS NOT NULL AND c.attempted_timestamp >= c.e2_at THEN c.e2
              WHEN c.e1 IS NOT NULL AND c.attempted_timestamp >= c.e1_at THEN c.e1
              ELSE c.e0 END AS experience_id
  FROM (
    SELECT t.*,
           -- local day k at the pair's slot (+ jitter; a same-day retry 2-4 hours later)
           ((t.start_local + t.k)::timestamp
             + (t.slot_secs + pg_temp.sample_rand(:p_seed, t.pair_id, t.b + 1) * t.jitter
                + CASE WHEN t.att = 2 THEN 7200 + pg_temp.sample_rand(:p_seed, t.pair_id, t.b + 7) * 7200
                       ELSE 0 END) * interval '1 second') AT TIME ZONE 'Asia/Kolkata' AS attempted_timestamp,
           -- for attempt 1 this is the same draw as ans1 below (same purpose code)
           pg_temp.sample_rand(:p_seed, t.pair_id, t.b) < t.pans AS answered,
           pg_temp.sample_rand(:p_seed, t.pair_id, t.b + 4) AS l,
           pg_temp.sample_rand(:p_seed, t.pair_id, t.b + 5) AS l2,
           pg_temp.sample_rand(:p_seed, t.pair_id, t.b + 6) AS l3,
           pg_temp.sample_rand(:p_seed, t.pair_id, t.b + 11) AS l4
    FROM (
      SELECT a.*, n.att, a.b0 + (n.att - 1) * 30 AS b
      FROM (
        -- whether the first attempt is answered, and whether a missed one is retried
        SELECT d.*,
               pg_temp.sample_rand(:p_seed, d.pair_id, d.b0) < d.pans AS ans1,
               pg_temp.sample_rand(:p_seed, d.pair_id, d.b0 + 60) < 0.35 AS retry_if_missed
        FROM (
          -- one row per (pair, day, lesson slot); purpose codes: a block of 1000
          -- per day and 100 per lesson slot
          SELECT p.pair_id, p.user_id, p.program_id, p.start_local, p.slot_secs, p.jitter, p.pf,
                 p.e0, p.e1, p.e1_at, p.e2, p.e2_at,
                 g.k, s.lslot, s.programseq_id AS sched_id,
                 (g.k + 3) * 1000 + s.lslot * 100 AS b0,
                 greatest(0.02, p.pa * (1 - p.decay * greatest(g.k, 0) / 200.0)) AS pans
          FROM pair p
          CROSS JOIN LATERAL generate_series(-p.pre, p.days - 1) g(k)
          JOIN sched s ON s.program_id = p.program_id AND s.k = g.k
          UNION ALL
          -- stray calls that match no experience pair: 2.5% of users get 2-8 calls
          -- every third day, 70% in program 6 (nobody's program), 30% from a user id
          -- that does not exist, with the user's real program
          SELECT p.pair_id + 4000000000, q.user_id, q.program_id, p.start_local, p.slot_secs, p.jitter, p.pf,
                 p.e0, NULL, NULL, NULL, NULL,
                 j * 3, 0, NULL, 900000 + j * 1000, p.pa
          FROM pair p
          CROSS JOIN LATERAL generate_series(1, 2 + floor(pg_temp.sample_rand(:p_seed, p.pair_id, 91) * 7)::int) j
          CROSS JOIN LATERAL (
            SELECT CASE WHEN pg_temp.sample_rand(:p_seed, p.pair_id, 92) < 0.7 THEN p.user_id
                        ELSE 900000000 + p.user_id END AS user_id,
                   CASE WHEN pg_temp.sample_rand(:p_seed, p.pair_id, 92) < 0.7 THEN 6
                        ELSE p.program_id END AS program_id) q
          WHERE p.pair_id % 2 = 0 AND pg_temp.sample_rand(:p_seed, p.pair_id, 90) < 0.025
          OFFSET 0
        ) d
        OFFSET 0
      ) a
      CROSS JOIN LATERAL generate_series(1, CASE WHEN NOT a.ans1 AND a.retry_if_missed THEN 2 ELSE 1 END) n(att)
      OFFSET 0
    ) t
    OFFSET 0
  ) c
  OFFSET 0
) z;

------------------------------------------------------------------------------------
-- Keys and the indexes the extract queries want, then fresh statistics.
------------------------------------------------------------------------------------
ALTER TABLE public.users      ADD PRIMARY KEY (id);
ALTER TABLE public.partner    ADD PRIMARY KEY (id);
ALTER TABLE public.experience ADD PRIMARY KEY (id);
ALTER TABLE public.programseq ADD PRIMARY KEY (id);
ALTER TABLE public.campaign   ADD PRIMARY KEY (id);
CREATE INDEX campaign_user_program_idx ON public.campaign (user_id, program_id);
CREATE INDEX experience_user_idx ON public.experience (user_id);

COMMIT;

ANALYZE public.users, public.partner, public.experience, public.programseq, public.campaign;
