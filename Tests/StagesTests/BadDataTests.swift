import Foundation
import Logging
import PipelineKit
import Stages
import XCTest

/// The shipped Dost pipeline on small hand-built sources full of bad data: NULLs
/// where values belong, negative durations, timestamps centuries away or infinite,
/// duplicate keys, orphans, and columns of the wrong type. The run must never
/// crash; rows it leaves out are counted per rule exactly as SQL counts them; a
/// value it cannot handle fails the stage with a message that says where.
final class BadDataTests: XCTestCase {
    /// users 1..10 are ordinary; every other row is a quirk, commented.
    static let baseSource = """
        DROP TABLE IF EXISTS campaign, experience, programseq, partner, users;
        CREATE TABLE users (id bigint NOT NULL, name text, created_on timestamptz, language text);
        CREATE TABLE partner (id bigint NOT NULL, name text, created_on timestamptz, provider_number text);
        CREATE TABLE experience (id bigint NOT NULL, user_id bigint, program_id int, provider_number text, phone text,
                                 created_on timestamptz);
        CREATE TABLE programseq (id bigint NOT NULL, program_id int, sequence_index int, week int, day int, title text);
        CREATE TABLE campaign (id bigint NOT NULL, experience_id bigint, program_id int, user_id bigint, status text,
                               listen_secs int, attempted_timestamp timestamptz, call_start_time timestamptz,
                               call_end_time timestamptz, programseq_id bigint);

        INSERT INTO users SELECT g, 'user ' || g, timestamptz '2020-01-01 08:00+00' + g * interval '1 day', 'hi'
        FROM generate_series(1, 10) AS g;
        INSERT INTO users VALUES
          (11, 'created_on NULL', NULL, 'hi'),
          (12, 'created in 1900', '1900-01-01 00:00+00', 'hi'),
          (13, 'created in 2200', '2200-01-01 00:00+00', 'hi');

        INSERT INTO partner VALUES
          (1, 'A', '2019-01-01', '+91 80 4710 0037'),
          (2, 'B: same last 10 digits as A', '2019-01-02', '08047100037'),
          (3, 'C: same last 10 digits as A', '2019-01-03', '8047100037'),
          (4, 'D: no number', '2019-01-04', NULL),
          (5, 'E: no digits', '2019-01-05', 'n/a'),
          (6, 'F', '2019-01-06', '022-6123-4501');

        INSERT INTO programseq SELECT 100 + i, 1, i, (i - 1) / 5 + 1, (i - 1) % 5 + 1, 'p1 lesson ' || i FROM generate_series(1, 10) AS i;
        INSERT INTO programseq SELECT 200 + i, 2, i, 1, i, 'p2 lesson ' || i FROM generate_series(1, 5) AS i;

        INSERT INTO experience VALUES
          (1, 1, 1, '8047100037', NULL, '2020-02-01 10:00+00'),
          (2, 1, 2, '6123-4501', NULL, '2020-02-03 10:00+00'),         -- 8 digits: no partner
          (3, 2, 1, 'none', NULL, '2020-02-02 20:00+00'),              -- no digits: no partner
          (4, 2, 1, '8047100037', NULL, '2020-02-05 10:00+00'),        -- later: not the anchor
          (5, 5, 1, '022 6123 4501', NULL, '2020-03-01 00:00+00'),     -- tie on time: lowest id wins
          (6, 5, 1, '8047100037', NULL, '2020-03-01 00:00+00'),
          (7, NULL, 1, NULL, NULL, '2020-02-01 10:00+00'),             -- NULL user
          (8, 6, NULL, NULL, NULL, '2020-02-01 10:00+00'),             -- NULL program
          (9, 3, 2, NULL, NULL, NULL),                                 -- NULL time, the pair's only row
          (10, 3, 1, NULL, NULL, NULL),                                -- NULL time, the pair has a timed row
          (11, 3, 1, NULL, NULL, '2020-04-01 10:00+00'),
          (12, 99, 1, NULL, NULL, '2020-02-01 10:00+00'),              -- user 99 does not exist
          (13, 99, 1, NULL, NULL, '2020-02-02 10:00+00'),
          (14, 98, 2, NULL, NULL, '2020-02-02 10:00+00'),              -- user 98 does not exist
          (15, 11, 1, NULL, NULL, '2020-02-01 10:00+00'),              -- user without created_on
          (16, 12, 1, NULL, NULL, '1900-06-01 10:00+00'),              -- starts in 1900
          (17, 13, 1, NULL, NULL, '2200-06-01 10:00+00'),              -- starts in 2200
          (18, 4, 3, NULL, NULL, '2020-02-01 10:00+00'),               -- program without lessons
          (19, 7, 1, NULL, NULL, '2020-01-31 19:00+00');               -- local date is the next day

        INSERT INTO campaign (id, experience_id, program_id, user_id, status, listen_secs, call_start_time, call_end_time, programseq_id) VALUES
          (1, 1, 1, 1, 'done', 120, '2020-02-02 10:00+00', '2020-02-02 10:02+00', 101),
          (2, 1, 1, 1, 'done', 45, '2020-02-03 10:00+00', '2020-02-03 09:00+00', 102),     -- ends before it starts
          (3, 1, 1, 1, 'done', -30, '2020-02-04 10:00+00', '2020-02-04 09:59+00', 103),    -- negative listen
          (4, 1, 1, 1, 'done', NULL, '2020-02-05 10:00+00', NULL, 104),                   -- NULL listen
          (5, 1, 1, 1, 'done', 100, '2020-02-06 10:00+00', '2020-02-06 10:01+00', NULL),  -- NULL lesson
          (6, 1, 1, 1, 'done', 100, '2019-12-31 10:00+00', '2019-12-31 10:01+00', 101),   -- before the start
          (7, 1, 1, 1, 'done', 100, '2021-06-01 10:00+00', '2021-06-01 10:01+00', 105),   -- after every window
          (8, 1, 1, 1, 'done', 100, '1900-01-01 10:00+00', '1900-01-01 10:01+00', 105),
          (9, 1, 1, 1, 'done', 100, '2200-01-01 10:00+00', '2200-01-01 10:01+00', 105),
          (10, NULL, 1, NULL, 'done', 100, '2020-02-02 10:00+00', NULL, 101),             -- NULL user
          (11, NULL, NULL, 1, 'done', 100, '2020-02-02 10:00+00', NULL, 101),             -- NULL program
          (12, 1, 1, 1, 'failed', 0, NULL, NULL, 101),                                    -- never started
          (13, NULL, 1, 50, 'done', 100, '2020-02-02 10:00+00', NULL, 101),               -- no such pair
          (14, 12, 1, 99, 'done', 100, '2020-02-02 10:00+00', NULL, 101),                 -- pair of a missing user
          (15, 16, 1, 12, 'done', 600, '1900-06-02 10:00+00', '1900-06-02 10:10+00', 101),
          (16, 17, 1, 13, 'done', 600, '2200-06-02 10:00+00', '2200-06-02 10:10+00', 101),
          (17, 18, 3, 4, 'done', 90, '2020-02-02 10:00+00', NULL, 301),
          (18, 3, 1, 2, 'done', 2147483647, '2020-02-03 10:00+00', NULL, 101),            -- int extremes
          (19, 3, 1, 2, 'done', -2147483648, '2020-02-04 10:00+00', NULL, 102),
          (20, 19, 1, 7, 'done', 60, '2020-01-31 19:30+00', NULL, 101),
          (21, 19, 1, 7, 'done', 60, '2020-02-01 18:00+00', NULL, 102),
          (22, 5, 1, 5, 'done', 31, '2020-02-29 18:29:59+00', NULL, 101),                 -- 1 s before the local start day
          (23, 11, 1, 3, 'done', 30, '2020-04-02 10:00+00', NULL, 101),
          (24, 1, 1, 1, 'done', 10, '294276-12-31 12:00:00+00', NULL, 101),               -- near the last representable instant
          (25, 1, 1, 1, 'done', 10, '4713-01-01 00:00:00+00 BC', NULL, 101);              -- the first one
        """

    /// A source database holding the base data changed by `changes`.
    func source(_ changes: String = "") throws -> String {
        let source = try TestDatabase.createDatabase("bad_src")
        try TestDatabase.connect(source).execute(Self.baseSource + "\n" + changes)
        return source
    }

    /// Runs the shipped pipeline, or `yaml`; by default reading every call, so that each rule is exercised.
    func run(source: String, warehouse: String, yaml: String? = nil) async throws -> RunReport {
        try await Dost.run(try Dost.loadPipeline(yaml: try yaml ?? Dost.yamlReadingUnansweredCalls(), source: source, warehouse: warehouse))
    }

    /// The real binary, for data that might crash the process (a crash here must
    /// fail one test, not end the test run).
    /// The runner binary on the shipped pipeline reading every call (see `run`).
    func runBinary(source: String, warehouse: String) throws -> ChildOutcome {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bad-data-\(UUID().uuidString).yaml").path
        try Dost.yamlReadingUnansweredCalls().write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try RunnerChild(["run", path, "--as-of", "2020-10-15", "--jobs", "2"],
                               environment: FaultTests.environment(source: source, warehouse: warehouse)).wait(timeout: 120)
    }

    /// `stage: excluded rows: a=1, b=2` from a summary.
    static func excluded(_ stage: String, in summary: String) -> [String: Int] {
        guard let line = summary.split(separator: "\n").first(where: { $0.hasPrefix("\(stage): excluded rows: ") }) else { return [:] }
        var result: [String: Int] = [:]
        for pair in line.dropFirst("\(stage): excluded rows: ".count).components(separatedBy: ", ") {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let count = Int(parts[1]) { result[String(parts[0])] = count }
        }
        return result
    }

    /// The windowAggregate rules of the Dost pipeline, counted in SQL from the
    /// README: groups are (user, program) pairs with keys and a time whose user
    /// exists; a call falls in a window when start ≤ local day < end; month3date and
    /// programenddate (start + the program's duration) are the last window ends.
    static func expectedUserprogramExclusions(_ source: String) throws -> [String: Int] {
        let sql = """
            WITH e AS (SELECT * FROM experience WHERE user_id IS NOT NULL AND program_id IS NOT NULL),
            timed AS (SELECT * FROM e WHERE created_on IS NOT NULL),
            pairs AS (
                SELECT DISTINCT ON (user_id, program_id) user_id, program_id,
                       (created_on AT TIME ZONE 'Asia/Kolkata')::date AS start
                FROM timed t WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = t.user_id)
                ORDER BY user_id, program_id, created_on, id),
            duration AS (SELECT program_id, max((week - 1) * 7 + day) AS days FROM programseq GROUP BY program_id),
            grp AS (SELECT p.*, greatest((p.start + interval '3 month')::date, p.start + d.days) AS last_end
                    FROM pairs p LEFT JOIN duration d USING (program_id)),
            c AS (SELECT *, (call_start_time AT TIME ZONE 'Asia/Kolkata')::date AS day FROM campaign
                  WHERE user_id IS NOT NULL AND program_id IS NOT NULL AND call_start_time IS NOT NULL)
            SELECT 'anchor_null_key', count(*) FROM experience WHERE user_id IS NULL OR program_id IS NULL
            UNION ALL SELECT 'anchor_null_time', count(*) FROM e WHERE created_on IS NULL
            UNION ALL SELECT 'created_on_not_found', count(*) FROM (SELECT DISTINCT user_id, program_id FROM timed t
                WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = t.user_id)) AS missing
            UNION ALL SELECT 'event_null_key', count(*) FROM campaign WHERE user_id IS NULL OR program_id IS NULL
            UNION ALL SELECT 'event_null_time', count(*) FROM campaign
                WHERE user_id IS NOT NULL AND program_id IS NOT NULL AND call_start_time IS NULL
            UNION ALL SELECT 'event_without_group', count(*) FROM c LEFT JOIN grp g USING (user_id, program_id) WHERE g.user_id IS NULL
            UNION ALL SELECT 'event_before_start', count(*) FROM c JOIN grp g USING (user_id, program_id) WHERE c.day < g.start
            UNION ALL SELECT 'event_after_windows', count(*) FROM c JOIN grp g USING (user_id, program_id)
                WHERE c.day >= g.start AND c.day >= g.last_end
            """
        return Dictionary(uniqueKeysWithValues: try TestDatabase.connect(source).query(sql).rows.map { ($0[0]!, Int($0[1]!)!) })
    }

    /// partnerorg's rules: key = last 10 digits of the number; no digits or NULL → null_or_empty_key;
    /// rows beyond the first of a key → duplicate_key.
    static func expectedPartnerExclusions(_ source: String) throws -> [String: Int] {
        let row = try TestDatabase.connect(source).query("""
            WITH k AS (SELECT NULLIF(right(regexp_replace(provider_number, '\\D', '', 'g'), 10), '') AS key FROM partner)
            SELECT count(*) FILTER (WHERE key IS NULL), count(key) - count(DISTINCT key) FROM k
            """).rows[0]
        return ["null_or_empty_key": Int(row[0]!)!, "duplicate_key": Int(row[1]!)!]
    }

    static func assertCounts(_ actual: [String: Int], equal expected: [String: Int], _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        for (rule, count) in expected {
            XCTAssertEqual(actual[rule] ?? 0, count, "\(what): excluded rows for rule \(rule)", file: file, line: line)
        }
        let unknown = Set(actual.keys).subtracting(expected.keys)
        XCTAssertTrue(unknown.isEmpty, "\(what): rules counted that SQL does not expect: \(unknown.sorted()) in \(actual)", file: file, line: line)
    }

    // MARK: rows left out, counted per rule

    func testQuirkyRowsAreLeftOutPerRuleWithTheCountsSQLGivesAndTheRestIsExact() async throws {
        let source = try source()
        let warehouse = try TestDatabase.createDatabase("bad_dw")
        let report = try await run(source: source, warehouse: warehouse)
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)

        let expected = try Self.expectedUserprogramExclusions(source)
        XCTAssertEqual(expected.values.filter { $0 > 0 }.count, 8, "the data should exercise every rule: \(expected)")
        Self.assertCounts(try XCTUnwrap(report.stage("userprogram")).excluded, equal: expected, "userprogram")
        Self.assertCounts(try XCTUnwrap(report.stage("partnerorg")).excluded, equal: try Self.expectedPartnerExclusions(source), "partnerorg")
        for stage in ["programlist", "user_lookup", "lessons_by_program", "userprogram_fact", "engagement_metric"] {
            XCTAssertEqual(report.stage(stage)?.excluded ?? [:], [:], stage)
        }

        // The reference keeps a pair whose only experience has no time (with NULL
        // dates, which then break its own engagement_metric); the pipeline leaves it
        // out as anchor_null_time. Without such pairs the two must agree exactly.
        try TestDatabase.connect(source).execute("""
            DELETE FROM experience e WHERE NOT EXISTS (SELECT 1 FROM experience t WHERE t.user_id = e.user_id
                AND t.program_id = e.program_id AND t.created_on IS NOT NULL)
            """)
        try Dost.assertWarehouseEqualsReference(source: source, warehouse: warehouse, asOf: "2020-10-15")
        let dw = try TestDatabase.connect(warehouse)
        XCTAssertEqual(try dw.query("SELECT month1_completed_minutes::text FROM dw.userprogram_fact WHERE user_id = 2").string(0, 0),
                       "35791394.12", "2147483647 s plus a clamped -2147483648 s")
        XCTAssertEqual(try dw.query("SELECT count(*) FROM dw.userprogram_fact WHERE user_id = 11 AND created_on IS NULL").int(0, 0), 1)
    }

    func testALessonWithoutAProgramIsLeftOutOfTheProgramListInsteadOfFailingTheWrite() async throws {
        // The reference says "a NULL program is no program"; the lookup counts the row
        // as null_or_empty_key but persist still writes it into a NOT NULL key.
        let source = try source("INSERT INTO programseq VALUES (300, NULL, 1, 1, 1, 'lesson of no program');")
        let warehouse = try TestDatabase.createDatabase("bad_dw")
        let report = try await run(source: source, warehouse: warehouse)
        XCTAssertEqual(report.stage("programlist")?.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.stage("programlist")?.excluded["null_or_empty_key"], 1)
        XCTAssertEqual(report.stage("lessons_by_program")?.excluded["null_or_empty_key"], 1)
        let dw = try TestDatabase.connect(warehouse)
        XCTAssertEqual(try TestDatabase.rows(dw, "SELECT program_id FROM dw.programlist"), ["1", "2"])
    }

    // MARK: infinite timestamps (run in a child process: a crash must not end the test run)

    func testInfiniteCallTimesFallOutsideTheWindowsInsteadOfCrashing() throws {
        let source = try source("""
            UPDATE campaign SET call_start_time = 'infinity' WHERE id = 7;
            UPDATE campaign SET call_start_time = '-infinity' WHERE id = 6;
            """)
        let outcome = try runBinary(source: source, warehouse: try TestDatabase.createDatabase("bad_dw"))
        XCTAssertFalse(outcome.signalled, "the runner crashed on call_start_time = ±infinity: \(outcome)")
        guard !outcome.signalled else { return }
        XCTAssertEqual(outcome.status, 0, "\(outcome)")
        Self.assertCounts(Self.excluded("userprogram", in: outcome.stdout), equal: try Self.expectedUserprogramExclusions(source),
                          "userprogram")
    }

    func testAnInfiniteExperienceTimeFailsOrIsLeftOutButNeverCrashes() throws {
        let source = try source("""
            INSERT INTO experience VALUES (20, 8, 1, NULL, NULL, 'infinity'), (21, 9, 1, NULL, NULL, '-infinity');
            """)
        let outcome = try runBinary(source: source, warehouse: try TestDatabase.createDatabase("bad_dw"))
        XCTAssertFalse(outcome.signalled, "the runner crashed on experience.created_on = ±infinity: \(outcome)")
        guard !outcome.signalled else { return }
        XCTAssertTrue([0, 1].contains(outcome.status), "\(outcome)")
        if outcome.status == 1 {
            let failure = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("userprogram: failed: ") }
            XCTAssertTrue(failure?.contains("created_on") ?? false, "the failure does not name the column: \(outcome.stdout)")
        } else {
            // Left out: the two rows must be counted under some rule, and not written.
            let base = try Self.expectedUserprogramExclusions(source).values.reduce(0, +)
            XCTAssertEqual(Self.excluded("userprogram", in: outcome.stdout).values.reduce(0, +), base + 2, outcome.stdout)
        }
    }

    func testAnInfiniteUserCreationTimeIsWrittenAsInfinity() throws {
        // created_on is copied from users unchanged; the reference keeps ±infinity.
        let source = try source("UPDATE users SET created_on = 'infinity' WHERE id = 1; UPDATE users SET created_on = '-infinity' WHERE id = 2;")
        let warehouse = try TestDatabase.createDatabase("bad_dw")
        let outcome = try runBinary(source: source, warehouse: warehouse)
        XCTAssertFalse(outcome.signalled, "the runner crashed on users.created_on = ±infinity: \(outcome)")
        guard !outcome.signalled else { return }
        XCTAssertEqual(outcome.status, 0, "\(outcome)")
        let dw = try TestDatabase.connect(warehouse)
        XCTAssertEqual(try TestDatabase.rows(dw, "SELECT user_id, created_on::text FROM dw.userprogram_fact WHERE user_id IN (1, 2)"),
                       ["1|infinity", "1|infinity", "2|-infinity"])
    }

    // MARK: values of the wrong type

    func testATextWeekMakesTheProgramQueriesFailOnceNamingTheTypes() async throws {
        let source = try source("ALTER TABLE programseq ALTER COLUMN week TYPE text;")
        let warehouse = try TestDatabase.createDatabase("bad_dw")
        let report = try await run(source: source, warehouse: warehouse)
        XCTAssertEqual(report.status, .failed)
        for stage in ["program_stats", "lesson_days"] {
            let failed = try XCTUnwrap(report.stage(stage))
            XCTAssertEqual(failed.status, .failed, report.summaryTable)
            XCTAssertEqual(failed.attempts, 1, "a type error is permanent")
            XCTAssertEqual(failed.sqlState, "42883")
            XCTAssertTrue(failed.error?.contains("text - integer") ?? false, failed.error ?? "")
        }
        XCTAssertEqual(report.stage("userprogram_fact")?.status, .skipped)
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT to_regclass('dw.userprogram_fact') IS NULL").string(0, 0), "t")
    }

    func testATextColumnDeclaredIntFailsTheExtractNamingTheColumnAndBothTypes() async throws {
        let source = try source("ALTER TABLE campaign ALTER COLUMN listen_secs TYPE text;")
        let report = try await run(source: source, warehouse: try TestDatabase.createDatabase("bad_dw"))
        let calls = try XCTUnwrap(report.stage("calls"))
        XCTAssertEqual(calls.status, .failed, report.summaryTable)
        XCTAssertEqual(calls.attempts, 1)
        XCTAssertTrue(calls.error?.contains("column 'listen_secs' is text in the source but declared int") ?? false, calls.error ?? "")
        XCTAssertEqual(report.stage("userprogram")?.status, .skipped)
    }

    func testAWeekThatIsNotANumberFailsTheStageScanningItOnceNamingTheValue() async throws {
        let source = try source("ALTER TABLE programseq ALTER COLUMN week TYPE text; UPDATE programseq SET week = 'two' WHERE id = 110;")
        let yaml = try Dost.yaml().replacingOccurrences(of: "(week - 1)", with: "(week::int - 1)")
        XCTAssertTrue(yaml.contains("week::int"))
        let report = try await run(source: source, warehouse: try TestDatabase.createDatabase("bad_dw"), yaml: yaml)
        XCTAssertEqual(report.status, .failed)
        // The extract is lazy: the stage that scans it is where the value is met,
        // and the message names the extract whose SQL met it.
        for (stage, extract) in [("programlist", "program_stats"), ("lessons_by_program", "lesson_days")] {
            let failed = try XCTUnwrap(report.stage(stage))
            XCTAssertEqual(failed.status, .failed, report.summaryTable)
            XCTAssertEqual(failed.attempts, 1, "bad data is permanent: \(report.summaryTable)")
            XCTAssertEqual(failed.sqlState, "22P02")
            XCTAssertTrue(failed.error?.hasPrefix("reading extract '\(extract)': invalid input syntax for type integer: \"two\"") ?? false,
                          failed.error ?? "")
        }
    }

    // MARK: values that cannot be handled

    func testDuplicateUserIdsFailTheLookupNamingTheKeyAndTheRows() async throws {
        let source = try source("INSERT INTO users VALUES (4, 'second user 4', '2021-01-01', 'en');")
        let warehouse = try TestDatabase.createDatabase("bad_dw")
        let report = try await run(source: source, warehouse: warehouse)
        let lookup = try XCTUnwrap(report.stage("user_lookup"))
        XCTAssertEqual(lookup.status, .failed, report.summaryTable)
        XCTAssertEqual(lookup.attempts, 1)
        let error = lookup.error ?? ""
        XCTAssertTrue(error.contains("2 rows of 'users' share the key 4"), error)
        XCTAssertNotNil(error.range(of: #"\(rows \d+, \d+\)"#, options: .regularExpression), error)
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT to_regclass('dw.userprogram_fact') IS NULL").string(0, 0), "t")
    }

    func testMinutesBeyondTheFactColumnsPrecisionFailTheWriteNamingTheColumn() async throws {
        // 300 calls of 2147483647 s: 10,737,418,235 minutes, beyond numeric(12,2).
        let source = try source("""
            INSERT INTO campaign (id, program_id, user_id, listen_secs, call_start_time, programseq_id)
            SELECT 1000 + g, 1, 1, 2147483647, '2020-02-10 10:00+00', 101 FROM generate_series(1, 300) AS g;
            """)
        let warehouse = try TestDatabase.createDatabase("bad_dw")
        let report = try await run(source: source, warehouse: warehouse)
        let fact = try XCTUnwrap(report.stage("userprogram_fact"))
        XCTAssertEqual(fact.status, .failed, report.summaryTable)
        XCTAssertEqual(fact.attempts, 1, "an overflow is permanent")
        // Caught before the server's "numeric field overflow" (22003), with the value and the fix.
        XCTAssertNil(fact.sqlState)
        XCTAssertTrue(fact.error?.contains("is out of range for column 'month1_completed_minutes' (numeric(12,2): at most 10 digits before the point); declare a larger precision") ?? false,
                      "the failure does not name the column that overflowed: \(fact.error ?? "")")
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT count(*) FROM dw.userprogram_fact").int(0, 0), 0,
                       "a failed write left rows behind")
    }
}
