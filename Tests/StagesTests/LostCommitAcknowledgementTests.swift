import Foundation
import PipelineKit
import Stages
import XCTest

/// A write whose COMMIT goes through while its acknowledgement is lost is
/// retried, and the retry must not count the incremental change twice, or
/// not at all: the warehouse still equals a full refresh, then and after.
///
/// Simulated with synchronous replication to a standby that does not exist:
/// every commit in the warehouse waits (SyncRep); a loop lets each waiter go
/// (a cancelled wait commits and succeeds), except the first commit of the
/// target stage, whose session it terminates: committed on the server, an
/// ended session for the client.
final class LostCommitAcknowledgementTests: XCTestCase {
    final class Once: @unchecked Sendable {
        private let lock = NSLock()
        private var done = false
        var happened: Bool { lock.withLock { done } }
        func claim() -> Bool { lock.withLock { defer { done = true }; return !done } }
    }

    override func setUp() async throws {
        let admin = try TestDatabase.connect(FaultTests.admin)
        try admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        try admin.execute("ALTER SYSTEM SET synchronous_commit = 'local'")
        try admin.execute("SELECT pg_reload_conf()")
    }

    override func tearDown() async throws {
        let admin = try TestDatabase.connect(FaultTests.admin)
        try admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        try admin.execute("ALTER SYSTEM RESET synchronous_commit")
        try admin.execute("SELECT pg_reload_conf()")
    }

    func testARetriedFactWriteWhoseFirstCommitWentThroughStillEqualsAFullRefresh() async throws {
        try await assertRetryAfterLostAcknowledgement(of: "userprogram_fact")
    }

    func testARetriedRollupWhoseFirstCommitWentThroughStillEqualsAFullRefresh() async throws {
        try await assertRetryAfterLostAcknowledgement(of: "engagement_metric")
    }

    private func assertRetryAfterLostAcknowledgement(of target: String) async throws {
        let source = try Incremental.privateSource()
        let warehouse = try TestDatabase.createDatabase("lost_ack_dw")
        _ = try await Incremental.succeed(source: source, warehouse: warehouse, asOf: "2020-10-01")
        // Late calls for a few pairs whose windows all closed: a handful of changed groups and cells.
        let pairs = try TestDatabase.connect(warehouse).query("""
            SELECT user_id, program_id, start_date::text FROM dw.userprogram_fact
            WHERE programenddate < '2020-08-01' ORDER BY user_id, program_id LIMIT 5
            """).rows
        XCTAssertEqual(pairs.count, 5)
        let calls = try TestDatabase.connect(source)
        for pair in pairs {
            let (user, program, start) = (pair[0]!, pair[1]!, pair[2]!)
            try calls.execute("""
                INSERT INTO campaign (id, experience_id, program_id, user_id, status, listen_secs, attempted_timestamp,
                                      call_start_time, call_end_time, programseq_id)
                SELECT (SELECT max(id) FROM campaign) + 1, NULL, \(program), \(user), status, 777,
                       '\(start)'::date + interval '3 days 6 hours', '\(start)'::date + interval '3 days 6 hours',
                       '\(start)'::date + interval '3 days 7 hours', (SELECT max(id) FROM programseq WHERE program_id = \(program))
                FROM campaign LIMIT 1
                """)
        }
        let database = try FaultTests.databaseName(warehouse)
        try TestDatabase.connect(warehouse).execute("ALTER DATABASE \(database) SET synchronous_commit = on")
        let once = Once()
        let loop = BackgroundLoop(conninfo: FaultTests.admin)
        let application = "runner/dost_warehouse/\(target)"
        loop.start { connection in
            let waiting = try connection.query("""
                SELECT pid::text, application_name FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'SyncRep'
                """, [database]).rows
            for row in waiting {
                let end = row[1] == application && once.claim()
                _ = try connection.query(end ? "SELECT pg_terminate_backend($1::int)" : "SELECT pg_cancel_backend($1::int)", [row[0]])
            }
            return .continue
        }
        let report = try await Dost.run(try Dost.loadPipeline(source: source, warehouse: warehouse, asOf: "2020-10-01"))
        loop.stop()
        try TestDatabase.connect(FaultTests.admin).execute("ALTER DATABASE \(database) RESET synchronous_commit")
        XCTAssertTrue(once.happened, "the target's commit was never seen waiting")
        XCTAssertEqual(report.status, .succeeded, report.summaryTable)
        XCTAssertEqual(report.stage(target)?.attempts, 2, report.summaryTable)
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-01")

        _ = try await Incremental.succeedIncrementally(source: source, warehouse: warehouse, asOf: "2020-10-02")
        try await Incremental.assertEqualsFullRefresh(warehouse, source: source, asOf: "2020-10-02")
    }
}
