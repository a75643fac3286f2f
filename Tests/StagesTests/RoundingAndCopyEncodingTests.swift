import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// Exact decimal rounding (Rounding.divide) and the COPY text rendering of
/// values written to the warehouse (CopyTextEncoder, PGTime.format).
final class RoundingAndCopyEncodingTests: XCTestCase {
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
        XCTAssertEqual(Rounding.pow10(0), 1)
        XCTAssertEqual(Rounding.pow10(2), 100)
        XCTAssertEqual(Rounding.pow10(18), 1_000_000_000_000_000_000)
    }

    // MARK: CopyTextEncoder

    func encode(_ type: DataType, _ values: [Value]) -> [String] {
        var column = Column(Field("c", type))
        values.forEach { column.append($0) }
        return values.indices.map { row in
            var line = ""
            CopyTextEncoder.append(column, row: row, to: &line)
            return line
        }
    }

    func testNumericWithScaleTwo() {
        XCTAssertEqual(encode(.numeric(precision: 12, scale: 2), [.int(0), .int(5), .int(-5), .int(12345), .int(-12345),
                                                                  .int(100), .int(-100), .int(99), .int(-1), .null]),
                       ["0.00", "0.05", "-0.05", "123.45", "-123.45", "1.00", "-1.00", "0.99", "-0.01", "\\N"])
    }

    func testNumericAtOtherScales() {
        XCTAssertEqual(encode(.numeric(precision: 12, scale: 0), [.int(-7), .int(0)]), ["-7", "0"])
        XCTAssertEqual(encode(.numeric(precision: 18, scale: 4), [.int(1), .int(-123_456)]), ["0.0001", "-12.3456"])
        XCTAssertEqual(CopyTextEncoder.decimal(Int64.min, scale: 2), "-92233720368547758.08")
        XCTAssertEqual(CopyTextEncoder.decimal(Int64.max, scale: 18), "9.223372036854775807")
    }

    func testIntegersBooleansAndNulls() {
        XCTAssertEqual(encode(.bigint, [.int(-42), .int(Int64.max), .null]), ["-42", "9223372036854775807", "\\N"])
        XCTAssertEqual(encode(.int, [.int(0)]), ["0"])
        XCTAssertEqual(encode(.bool, [.int(1), .int(0), .null]), ["t", "f", "\\N"])
    }

    func testTextEscapesBackslashTabNewlineAndCarriageReturn() {
        XCTAssertEqual(encode(.text, [.text("plain"), .text("a\tb"), .text("a\nb"), .text("a\\b"), .text("a\rb"),
                                      .text("\\N"), .text(""), .null, .text("tab\tnew\nback\\slash")]),
                       ["plain", "a\\tb", "a\\nb", "a\\\\b", "a\\rb",
                        "\\\\N", "", "\\N", "tab\\tnew\\nback\\\\slash"])
    }

    func testTextEscapesAWindowsLineEnding() {
        // "\r\n" is a single Character in Swift; both bytes must still be escaped,
        // or the row is cut in two inside COPY.
        XCTAssertEqual(encode(.text, [.text("line1\r\nline2")]), ["line1\\r\\nline2"])
        XCTAssertEqual(encode(.text, [.text("a\\b\r\n")]), ["a\\\\b\\r\\n"])
    }

    func testTextKeepsUnicode() {
        XCTAssertEqual(encode(.text, [.text("दोस्त é 🙂")]), ["दोस्त é 🙂"])
    }

    func testDates() {
        XCTAssertEqual(encode(.date, [.int(0), .int(-1), .int(F.day(2020, 2, 29)), .int(F.day(1969, 7, 20))]),
                       ["2000-01-01", "1999-12-31", "2020-02-29", "1969-07-20"])
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

    func testTimestamptzColumnsUsePGTimeFormat() {
        XCTAssertEqual(encode(.timestamptz, [.int(F.micros(2021, 3, 4, 5, 6, 7, micro: 89)), .null]),
                       ["2021-03-04 05:06:07.000089+00", "\\N"])
    }
}
