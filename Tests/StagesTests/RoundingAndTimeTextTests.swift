import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// Exact decimal rounding (Rounding.divide) and the text form of timestamps
/// in messages and lineage (PGTime.format).
final class RoundingAndTimeTextTests: XCTestCase {
    typealias F = UnitFixture

    // MARK: Rounding.divide

    /// Half away from zero, written independently: sign · ⌊(2|v| + |d|) / 2|d|⌋.
    static func halfAwayFromZero(_ value: Int64, _ divisor: Int64) -> Int64 {
        let negative = (value < 0) != (divisor < 0)
        let magnitude = (2 * value.magnitude + divisor.magnitude) / (2 * divisor.magnitude)
        return negative ? -Int64(magnitude) : Int64(magnitude)
    }

    func testDivideRoundsHalvesAwayFromZero() {
        XCTAssertEqual(Rounding.divide(5, by: 2), 3)
        XCTAssertEqual(Rounding.divide(-5, by: 2), -3)
        XCTAssertEqual(Rounding.divide(15, by: 10), 2)
        XCTAssertEqual(Rounding.divide(-15, by: 10), -2)
        XCTAssertEqual(Rounding.divide(25, by: 10), 3, "not banker's rounding")
        XCTAssertEqual(Rounding.divide(-25, by: 10), -3)
        XCTAssertEqual(Rounding.divide(5, by: -2), -3)
        XCTAssertEqual(Rounding.divide(-5, by: -2), 3)
    }

    func testDivideRoundsNonHalvesToTheNearest() {
        XCTAssertEqual(Rounding.divide(14, by: 10), 1)
        XCTAssertEqual(Rounding.divide(-14, by: 10), -1)
        XCTAssertEqual(Rounding.divide(16, by: 10), 2)
        XCTAssertEqual(Rounding.divide(-16, by: 10), -2)
        XCTAssertEqual(Rounding.divide(1, by: 3), 0)
        XCTAssertEqual(Rounding.divide(2, by: 3), 1)
        XCTAssertEqual(Rounding.divide(-2, by: 3), -1)
        XCTAssertEqual(Rounding.divide(0, by: 7), 0)
        XCTAssertEqual(Rounding.divide(100, by: 60), 2, "1 s = 0.0166… min → 0.02")
    }

    func testDivideAgreesWithAnIndependentFormulaEverywhereSmall() {
        for divisor in Int64(-13)...13 where divisor != 0 {
            for value in Int64(-1000)...1000 {
                XCTAssertEqual(Rounding.divide(value, by: divisor), Self.halfAwayFromZero(value, divisor), "\(value) / \(divisor)")
            }
        }
    }

    func testDivideAtLargeMagnitudes() {
        XCTAssertEqual(Rounding.divide(Int64.max, by: 2), Int64.max / 2 + 1)
        XCTAssertEqual(Rounding.divide(Int64.min, by: 2), Int64.min / 2)
        XCTAssertEqual(Rounding.divide(Int64.min + 1, by: 2), Int64.min / 2)
        XCTAssertEqual(Rounding.divide(Int64.max - 1, by: Int64.max), 1)
    }

    func testPow10() {
        XCTAssertEqual(Int64.pow10(0), 1)
        XCTAssertEqual(Int64.pow10(2), 100)
        XCTAssertEqual(Int64.pow10(18), 1_000_000_000_000_000_000)
    }

    // MARK: timestamptz

    func testTimestamptzIsFormattedInUTCWithMicroseconds() {
        XCTAssertEqual(PGTime.format(micros: 0), "2000-01-01 00:00:00+00")
        XCTAssertEqual(PGTime.format(micros: 1), "2000-01-01 00:00:00.000001+00")
        XCTAssertEqual(PGTime.format(micros: F.micros(2020, 1, 31, 18, 30, 0, micro: 1)), "2020-01-31 18:30:00.000001+00")
        XCTAssertEqual(PGTime.format(micros: F.micros(2020, 2, 29, 23, 59, 59, micro: 999_999)), "2020-02-29 23:59:59.999999+00")
        XCTAssertEqual(PGTime.format(micros: F.micros(2020, 1, 1, 12, 0, 0, micro: 500_000)), "2020-01-01 12:00:00.500000+00")
    }

    func testTimestamptzBefore2000() {
        XCTAssertEqual(PGTime.format(micros: -1), "1999-12-31 23:59:59.999999+00")
        XCTAssertEqual(PGTime.format(micros: -1_000_000), "1999-12-31 23:59:59+00")
        XCTAssertEqual(PGTime.format(micros: -86_400_000_000), "1999-12-31 00:00:00+00")
        XCTAssertEqual(PGTime.format(micros: -86_400_000_001), "1999-12-30 23:59:59.999999+00")
        XCTAssertEqual(PGTime.format(micros: F.micros(1970, 1, 1)), "1970-01-01 00:00:00+00")
        XCTAssertEqual(PGTime.format(micros: F.micros(1969, 12, 31, 23, 59, 59, micro: 123_456)), "1969-12-31 23:59:59.123456+00")
    }
}
