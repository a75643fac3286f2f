import Foundation
import XCTest
@testable import PipelineKit

/// Which failures are retried, and how long the runner waits between attempts.
final class RetryPolicyTests: XCTestCase {
    private struct OtherError: Error {}

    private func server(_ state: String) -> PGError {
        PGError(kind: .server, sqlState: state, message: "SQLSTATE \(state)")
    }

    func testTransientSQLStatesAreRetried() {
        let transient = [
            "08000", "08001", "08003", "08004", "08006", "08P01", // connection exceptions (class 08)
            "40001", // serialization_failure
            "40P01", // deadlock_detected
            "53000", "53100", "53200", "53300", // insufficient resources (class 53)
            "57P01", "57P02", "57P03", // admin/crash shutdown, cannot connect now
        ]
        for state in transient {
            XCTAssertTrue(RetryPolicy.isTransient(server(state)), "\(state) should be transient")
        }
    }

    func testConnectionFailureWithoutSQLStateIsTransient() {
        XCTAssertTrue(RetryPolicy.isTransient(PGError(kind: .connection, sqlState: nil, message: "server closed the connection")))
        XCTAssertTrue(RetryPolicy.isTransient(PGError(kind: .connection, sqlState: "42601", message: "lost")),
                      "a connection-kind error is transient whatever its state")
    }

    func testPermanentSQLStatesAreNotRetried() {
        let permanent = [
            "42601", // syntax_error
            "42501", // insufficient_privilege
            "23505", // unique_violation
            "42P01", // undefined_table
            "22012", // division_by_zero
            "40002", // transaction_integrity_constraint_violation: class 40 but not 40001/40P01
            "57014", // query_canceled: class 57 but not 57P01-57P03
            "57P04", // database_dropped
            "25006", // read_only_sql_transaction
        ]
        for state in permanent {
            XCTAssertFalse(RetryPolicy.isTransient(server(state)), "\(state) should be permanent")
        }
    }

    func testServerErrorWithoutSQLStateAndProtocolViolationsAreNotRetried() {
        XCTAssertFalse(RetryPolicy.isTransient(PGError(kind: .server, sqlState: nil, message: "?")))
        XCTAssertFalse(RetryPolicy.isTransient(PGError(kind: .protocolViolation, sqlState: nil, message: "bad COPY header")))
    }

    func testOnlyTransientStageFailuresAreRetried() {
        XCTAssertTrue(RetryPolicy.isTransient(StageFailure.transient("source went away")))
        XCTAssertFalse(RetryPolicy.isTransient(StageFailure.config("column id is text")))
        XCTAssertFalse(RetryPolicy.isTransient(StageFailure.data("row 3: bad value")))
        XCTAssertFalse(RetryPolicy.isTransient(StageFailure.missingInput("no input")))
        XCTAssertFalse(RetryPolicy.isTransient(OtherError()))
        XCTAssertFalse(RetryPolicy.isTransient(CancellationError()))
    }

    // MARK: backoff

    func testBackoffDoublesUntilMaxBackoffWithoutJitter() {
        let policy = RetryPolicy(maxAttempts: 10, initialBackoff: 1, multiplier: 2, maxBackoff: 8, jitter: 0)
        XCTAssertEqual((1...7).map { policy.delay(afterAttempt: $0, unit: 0.3) }, [1, 2, 4, 8, 8, 8, 8])

        let capped = RetryPolicy(maxAttempts: 10, initialBackoff: 1, multiplier: 2, maxBackoff: 5, jitter: 0)
        XCTAssertEqual((1...5).map { capped.delay(afterAttempt: $0, unit: 0.9) }, [1, 2, 4, 5, 5])
    }

    func testBackoffHonoursInitialDelayAndMultiplier() {
        let policy = RetryPolicy(maxAttempts: 10, initialBackoff: 0.5, multiplier: 3, maxBackoff: 30, jitter: 0)
        XCTAssertEqual((1...5).map { policy.delay(afterAttempt: $0, unit: 0.5) }, [0.5, 1.5, 4.5, 13.5, 30])
    }

    func testDefaultPolicy() {
        XCTAssertEqual(RetryPolicy.default,
                       RetryPolicy(maxAttempts: 3, initialBackoff: 1, multiplier: 2, maxBackoff: 30, jitter: 0.2))
    }

    func testJitterSpreadsTheDelayOverPlusMinusJitter() {
        let policy = RetryPolicy(maxAttempts: 10, initialBackoff: 1, multiplier: 2, maxBackoff: 30, jitter: 0.2)
        // attempt 3: base 4 s
        XCTAssertEqual(policy.delay(afterAttempt: 3, unit: 0), 3.2, accuracy: 1e-9)            // base·(1−jitter)
        XCTAssertEqual(policy.delay(afterAttempt: 3, unit: 0.5), 4, accuracy: 1e-9)            // base
        XCTAssertEqual(policy.delay(afterAttempt: 3, unit: 0.999_999_9), 4.8, accuracy: 1e-5)  // base·(1+jitter)
        XCTAssertEqual(policy.delay(afterAttempt: 3, unit: 0.25), 3.6, accuracy: 1e-9)
    }

    func testJitteredDelayStaysWithinBoundsForAnyUnit() {
        let policy = RetryPolicy(maxAttempts: 10, initialBackoff: 1, multiplier: 2, maxBackoff: 30, jitter: 0.5)
        for attempt in 1...4 {
            let base = pow(2, Double(attempt - 1))
            for step in 0..<100 {
                let delay = policy.delay(afterAttempt: attempt, unit: Double(step) / 100)
                XCTAssertGreaterThanOrEqual(delay, base * 0.5 - 1e-9)
                XCTAssertLessThan(delay, base * 1.5)
            }
        }
    }

    func testJitteredDelayNeverExceedsMaxBackoff() {
        let policy = RetryPolicy(maxAttempts: 10, initialBackoff: 1, multiplier: 2, maxBackoff: 30, jitter: 0.2)
        // attempt 10: base is capped at 30; the upward half of the jitter is cut off there.
        XCTAssertEqual(policy.delay(afterAttempt: 10, unit: 0), 24, accuracy: 1e-9)
        XCTAssertEqual(policy.delay(afterAttempt: 10, unit: 0.999_999), 30, accuracy: 1e-9)
    }

    func testFullJitterCanReachZeroButNotBelow() {
        let policy = RetryPolicy(maxAttempts: 3, initialBackoff: 2, multiplier: 2, maxBackoff: 30, jitter: 1)
        XCTAssertEqual(policy.delay(afterAttempt: 1, unit: 0), 0)
        XCTAssertEqual(policy.delay(afterAttempt: 1, unit: 0.75), 3, accuracy: 1e-9)
    }

    func testNoInitialDelayStaysNoDelayWhateverTheGrowth() {
        // 0 × an overflowing growth is NaN, which min() turned into max_backoff.
        let policy = RetryPolicy(maxAttempts: 3, initialBackoff: 0, multiplier: 1e308, maxBackoff: 30, jitter: 0)
        XCTAssertEqual(policy.delay(afterAttempt: 3, unit: 0.5), 0)
        XCTAssertEqual(RetryPolicy(maxAttempts: 2_000, initialBackoff: 0, multiplier: 2, maxBackoff: 30, jitter: 0)
            .delay(afterAttempt: 1_500, unit: 0.5), 0)
    }

    // MARK: from the pipeline file

    func testAMultiplierThatIsNotANumberIsRejected() {
        let text = "pipeline: demo\ndefaults:\n  retry:\n    multiplier: .nan\nstages:\n  - id: a\n    type: noop\n"
        assertSingleDiagnostic(loadDiagnostics(text, registry: testRegistry), at: (4, 17),
                               contains: ["'multiplier' must be at least 1, not nan"])
    }

    func testRetrySettingsAreReadFromDefaultsAndStageOverridesOnlyTheKeysItSets() throws {
        let text = """
            pipeline: demo
            defaults:
              retry:
                max_attempts: 5
                initial_backoff: 500ms
                multiplier: 3
                max_backoff: 1m
                jitter: 0
            stages:
              - id: a
                type: noop
              - id: b
                type: noop
                retry: {max_attempts: 2, initial_backoff: 2s}

            """
        let pipeline = try loadPipeline(text, registry: testRegistry)
        XCTAssertEqual(pipeline.stage("a")?.retry,
                       RetryPolicy(maxAttempts: 5, initialBackoff: 0.5, multiplier: 3, maxBackoff: 60, jitter: 0))
        XCTAssertEqual(pipeline.stage("b")?.retry,
                       RetryPolicy(maxAttempts: 2, initialBackoff: 2, multiplier: 3, maxBackoff: 60, jitter: 0))
    }

    func testStagesWithoutRetrySettingsUseTheDefaultPolicy() throws {
        let pipeline = try loadPipeline("pipeline: demo\nstages:\n  - id: a\n    type: noop\n", registry: testRegistry)
        XCTAssertEqual(pipeline.stage("a")?.retry, RetryPolicy.default)
    }

    func testDurationsAcceptUnitsAndPlainSeconds() {
        XCTAssertEqual(DurationText.seconds("250ms"), 0.25)
        XCTAssertEqual(DurationText.seconds("2s"), 2)
        XCTAssertEqual(DurationText.seconds("1.5s"), 1.5)
        XCTAssertEqual(DurationText.seconds("1m"), 60)
        XCTAssertEqual(DurationText.seconds("1h"), 3600)
        XCTAssertEqual(DurationText.seconds("3"), 3)
        XCTAssertNil(DurationText.seconds("-1s"))
        XCTAssertNil(DurationText.seconds("soon"))
    }

    func testInvalidDurationIsRejectedWithItsLocation() {
        let text = "pipeline: demo\ndefaults:\n  retry:\n    max_backoff: forever\nstages:\n  - id: a\n    type: noop\n"
        assertSingleDiagnostic(loadDiagnostics(text, registry: testRegistry), at: (4, 18),
                               contains: ["'max_backoff' must be a duration", "'forever'"])
    }
}
