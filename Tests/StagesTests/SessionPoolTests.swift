import Foundation
import PipelineKit
@testable import Stages
import XCTest

/// Within a run, a stage's session serves the next stage, unless it could carry anything over.
final class SessionPoolTests: XCTestCase {
    private var database = ""
    private var observer: PGConnection!

    override func setUpWithError() throws {
        database = try TestDatabase.createDatabase("pool")
        observer = try TestDatabase.connect(database)
    }

    private func provider(_ stage: String, _ pool: SessionPool, readOnly: Bool = false) -> ConnectionProvider {
        ConnectionProvider(pipelineName: "pool", stageID: stage,
                           definitions: ["db": ConnectionDefinition(name: "db", info: ConnInfo(database), readOnly: readOnly)],
                           cancellation: Cancellation(), pool: pool)
    }

    private func isOpen(_ pid: Int32) throws -> Bool {
        try observer.query("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", [String(pid)]).int(0, 0) == 1
    }

    /// The server process of the session `stage` gets from `pool`.
    private func backendPID(_ stage: String, _ pool: SessionPool, readOnly: Bool = false) throws -> Int32 {
        try provider(stage, pool, readOnly: readOnly).with("db") { $0.backendPID }
    }

    /// Waits (up to 10 s) for a server process to be gone.
    private func waitUntilClosed(_ pid: Int32) throws {
        let deadline = Date().addingTimeInterval(10)
        while try isOpen(pid) && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
    }

    func testASessionLeftIdleServesTheNextStageUnderThatStagesName() throws {
        let pool = SessionPool()
        let first = try backendPID("a", pool)
        let (second, name) = try provider("b", pool).with("db") { connection in
            (connection.backendPID, try connection.query("SHOW application_name").string(0, 0))
        }
        XCTAssertEqual(first, second)
        XCTAssertEqual(name, "runner/pool/b")
    }

    func testASessionLeftInATransactionOrAfterAFailureIsClosedInsteadOfReused() throws {
        let pool = SessionPool()
        let open = try provider("a", pool).with("db") { connection in
            try connection.execute("BEGIN")
            return connection.backendPID
        }
        struct Failed: Error {}
        var failed: Int32 = 0
        XCTAssertThrowsError(try provider("b", pool).with("db") { connection in
            failed = connection.backendPID
            throw Failed()
        })
        let next = try backendPID("c", pool)
        XCTAssertNotEqual(next, open)
        XCTAssertNotEqual(next, failed)
        // A closed session's server process exits a moment after the client lets go.
        try waitUntilClosed(open)
        try waitUntilClosed(failed)
        XCTAssertFalse(try isOpen(open), "the session left in a transaction must be closed")
        XCTAssertFalse(try isOpen(failed), "the session of a failed stage must be closed")
    }

    func testASessionTheServerEndedWhileIdleIsReplacedWithoutAnError() throws {
        let pool = SessionPool()
        let first = try backendPID("a", pool)
        _ = try observer.query("SELECT pg_terminate_backend($1)", [String(first)])
        try waitUntilClosed(first)
        let (second, answer) = try provider("b", pool).with("db") { connection in
            (connection.backendPID, try connection.query("SELECT 42").string(0, 0))
        }
        XCTAssertNotEqual(second, first)
        XCTAssertEqual(answer, "42")
    }

    func testAReusedSessionOfAReadOnlyConnectionStillRefusesToWrite() throws {
        let pool = SessionPool()
        _ = try backendPID("a", pool, readOnly: true)
        XCTAssertThrowsError(try provider("b", pool, readOnly: true).with("db") { connection in
            try connection.execute("CREATE TABLE written (id int)")
        }) { error in
            XCTAssertEqual((error as? PGError)?.sqlState, "25006", "\(error)")  // read_only_sql_transaction
        }
    }

    func testReadsStoppedByTheirConsumerLeaveThePoolServingTheNextStage() throws {
        // The consumer fails on the only batch, which comes after the COPY has
        // ended, while the reader still holds its session.
        struct ConsumerFailed: Error {}
        let pool = SessionPool()
        let relation = CopyRelation(connection: "db", sql: "SELECT generate_series(1, 100)::int AS n",
                                    schema: [Field("n", .int)], batchRows: 1000)
        for attempt in 0..<20 {
            let context = ScanContext(connections: provider("read", pool), cancellation: Cancellation(), metrics: StageMetrics())
            XCTAssertThrowsError(try relation.scan(context) { _ in throw ConsumerFailed() })
            XCTAssertNoThrow(try provider("next", pool).with("db") { try $0.execute("SELECT pg_sleep(0.02)") }, "attempt \(attempt)")
        }
    }

    func testAReaderWhoseSessionWasSentACancelKnowsItWhenItLetsGo() throws {
        // A cancel request travels on a connection of its own and can land
        // after the statement it was meant for: the reader must learn that it
        // was sent, so that it does not hand the session on.
        let session = try TestDatabase.connect(database)
        let cancelled = ActiveConnection(), untouched = ActiveConnection(), late = ActiveConnection()
        cancelled.set(session)
        cancelled.cancel()
        XCTAssertTrue(cancelled.release())
        untouched.set(session)
        XCTAssertFalse(untouched.release())
        late.set(session)
        XCTAssertFalse(late.release())
        late.cancel()  // after the reader let go: nothing is sent, nothing to report
    }

    func testClosingThePoolEndsItsIdleSessions() throws {
        let pool = SessionPool()
        let pid = try backendPID("a", pool)
        XCTAssertTrue(try isOpen(pid))
        pool.close()
        try waitUntilClosed(pid)
        XCTAssertFalse(try isOpen(pid))
        // A session given back after the run ended is not kept either.
        let late = try backendPID("b", pool)
        try waitUntilClosed(late)
        XCTAssertFalse(try isOpen(late))
    }
}
