import Foundation
import XCTest
@testable import PipelineKit

/// Calendar arithmetic, PostgreSQL day numbers and instant-to-local-day mapping.
final class CivilDateTests: XCTestCase {
    private func date(_ iso: String, file: StaticString = #filePath, line: UInt = #line) -> CivilDate {
        guard let date = CivilDate(iso: iso) else {
            XCTFail("'\(iso)' did not parse", file: file, line: line)
            return CivilDate(year: 1, month: 1, day: 1)
        }
        return date
    }

    // MARK: months

    func testJanuary31PlusOneMonthIsFebruary29InALeapYear() {
        XCTAssertEqual(date("2020-01-31").adding(months: 1).description, "2020-02-29")
    }

    func testJanuary31PlusOneMonthIsFebruary28InACommonYear() {
        XCTAssertEqual(date("2021-01-31").adding(months: 1).description, "2021-02-28")
    }

    func testMarch31MinusOneMonthClampsToTheEndOfFebruary() {
        XCTAssertEqual(date("2020-03-31").adding(months: -1).description, "2020-02-29")
        XCTAssertEqual(date("2021-03-31").adding(months: -1).description, "2021-02-28")
        XCTAssertEqual(date("1900-03-31").adding(months: -1).description, "1900-02-28", "1900 is not a leap year")
        XCTAssertEqual(date("2000-03-31").adding(months: -1).description, "2000-02-29", "2000 is a leap year")
    }

    func testAddingMonthsCrossesYearBoundaries() {
        XCTAssertEqual(date("2020-11-30").adding(months: 3).description, "2021-02-28")
        XCTAssertEqual(date("2020-01-15").adding(months: -1).description, "2019-12-15")
        XCTAssertEqual(date("2020-01-15").adding(months: -13).description, "2018-12-15")
        XCTAssertEqual(date("2020-05-31").adding(months: 24).description, "2022-05-31")
        XCTAssertEqual(date("2020-05-31").adding(months: 0).description, "2020-05-31")
        XCTAssertEqual(date("0000-01-10").adding(months: -1), CivilDate(year: -1, month: 12, day: 10))
    }

    func testFirstOfMonth() {
        XCTAssertEqual(date("2020-02-29").firstOfMonth.description, "2020-02-01")
    }

    func testLeapYearRules() {
        XCTAssertTrue(CivilDate.isLeap(2020))
        XCTAssertTrue(CivilDate.isLeap(2000))
        XCTAssertFalse(CivilDate.isLeap(1900))
        XCTAssertFalse(CivilDate.isLeap(2021))
        XCTAssertEqual((1...12).map { CivilDate.daysIn(year: 2021, month: $0) }, [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    }

    // MARK: PostgreSQL day numbers

    func testKnownDayNumbers() {
        XCTAssertEqual(date("2000-01-01").pgDays, 0)
        XCTAssertEqual(date("1999-12-31").pgDays, -1)
        XCTAssertEqual(date("2000-03-01").pgDays, 60)
        XCTAssertEqual(date("1970-01-01").pgDays, -10_957)
        XCTAssertEqual(date("2020-01-31").pgDays, 7_335)
        XCTAssertEqual(date("2020-02-29").pgDays, 7_364)
        XCTAssertEqual(date("1600-03-01").pgDays, -146_037)
        XCTAssertEqual(CivilDate(pgDays: 0).description, "2000-01-01")
        XCTAssertEqual(CivilDate(pgDays: -1).description, "1999-12-31")
        XCTAssertEqual(CivilDate(pgDays: -10_957).description, "1970-01-01")
        XCTAssertEqual(CivilDate(pgDays: 7_364).description, "2020-02-29")
    }

    func testDayNumbersRoundTripAndAdvanceOneCalendarDayAtATime() {
        // 1600-01-01 to 2400-12-31, through negative day numbers before 2000:
        // every day number maps to the calendar successor of the previous one.
        var expected = CivilDate(year: 1600, month: 1, day: 1)
        let first = expected.pgDays
        XCTAssertLessThan(first, 0)
        var failures = 0
        for days in first...(first + 293_000) {
            let date = CivilDate(pgDays: days)
            if date != expected || date.pgDays != days {
                failures += 1
                if failures < 5 { XCTFail("day \(days): got \(date) (pgDays \(date.pgDays)), expected \(expected)") }
            }
            // The successor, computed independently of pgDays.
            if expected.day < CivilDate.daysIn(year: expected.year, month: expected.month) {
                expected.day += 1
            } else if expected.month < 12 {
                expected = CivilDate(year: expected.year, month: expected.month + 1, day: 1)
            } else {
                expected = CivilDate(year: expected.year + 1, month: 1, day: 1)
            }
        }
        XCTAssertEqual(failures, 0)
        XCTAssertGreaterThan(expected.year, 2400)
    }

    func testDatesCompareByDay() {
        XCTAssertLessThan(date("1999-12-31"), date("2000-01-01"))
        XCTAssertLessThan(date("2020-02-28"), date("2020-02-29"))
        XCTAssertFalse(date("2020-03-01") < date("2020-02-29"))
    }

    // MARK: parsing

    func testValidISODatesParse() {
        XCTAssertEqual(CivilDate(iso: "2020-02-29"), CivilDate(year: 2020, month: 2, day: 29))
        XCTAssertEqual(CivilDate(iso: "1999-12-31"), CivilDate(year: 1999, month: 12, day: 31))
    }

    func testImpossibleOrMalformedISODatesAreRejected() {
        for text in ["2020-02-30", "2021-02-29", "2020-13-01", "2020-00-10", "2020-04-31", "2020-01-00",
                     "2020-1-1", "2020-01-1", "20-01-01", "2020/01/01", "2020-01-01T00:00", " 2020-01-01",
                     "2020-01-01 ", "", "2020--01", "abcd-ef-gh"] {
            XCTAssertNil(CivilDate(iso: text), "'\(text)' should be rejected")
        }
    }

    /// BUG (see report): `Int(_:)` accepts a leading '+', so signed parts of the
    /// right length pass the length checks.
    func testSignedComponentsAreRejected() {
        for text in ["2020-+1-01", "2020-01-+1", "+020-01-01"] {
            XCTAssertNil(CivilDate(iso: text), "'\(text)' should be rejected, got \(String(describing: CivilDate(iso: text)))")
        }
    }

    // MARK: local days

    private func micros(_ iso8601: String, file: StaticString = #filePath, line: UInt = #line) -> Int64 {
        let formatter = ISO8601DateFormatter()
        guard let instant = formatter.date(from: iso8601) else {
            XCTFail("bad timestamp \(iso8601)", file: file, line: line)
            return 0
        }
        return Int64((instant.timeIntervalSince1970 - 946_684_800).rounded()) * 1_000_000
    }

    private func localDay(_ mapper: inout LocalDayMapper, _ iso8601: String) -> String {
        CivilDate(pgDays: mapper.localDay(micros: micros(iso8601))).description
    }

    func testKolkataDayChangesAt1830UTC() {
        var mapper = LocalDayMapper(zone: TimeZone(identifier: "Asia/Kolkata")!)
        XCTAssertEqual(localDay(&mapper, "2020-01-31T18:29:59Z"), "2020-01-31")
        XCTAssertEqual(localDay(&mapper, "2020-01-31T18:30:00Z"), "2020-02-01")
        XCTAssertEqual(mapper.localDay(micros: micros("2020-01-31T18:30:00Z") - 1), 7_335, "one microsecond earlier")
        XCTAssertEqual(localDay(&mapper, "2020-01-31T00:00:00Z"), "2020-01-31")
        // Back and forth, so the per-quarter-hour cache is used both ways.
        XCTAssertEqual(localDay(&mapper, "2020-01-31T18:29:59Z"), "2020-01-31")
        XCTAssertEqual(localDay(&mapper, "2020-01-31T18:30:00Z"), "2020-02-01")
    }

    func testKolkataBefore2000UsesNegativeDayNumbers() {
        var mapper = LocalDayMapper(zone: TimeZone(identifier: "Asia/Kolkata")!)
        XCTAssertEqual(mapper.localDay(micros: micros("1999-12-31T18:30:00Z")), 0)
        XCTAssertEqual(mapper.localDay(micros: micros("1999-12-31T18:30:00Z") - 1), -1)
        XCTAssertEqual(localDay(&mapper, "1999-12-31T18:29:59Z"), "1999-12-31")
        XCTAssertEqual(localDay(&mapper, "1985-06-15T20:00:00Z"), "1985-06-16")
    }

    func testATransitionOffTheQuarterHourMovesTheDayBoundaryAtTheExactInstant() {
        // St. John's fell back at 00:01 local (02:31 UTC) until 2010: 02:35 UTC is 23:05 on the 6th again.
        var stJohns = LocalDayMapper(zone: TimeZone(identifier: "America/St_Johns")!)
        XCTAssertEqual(localDay(&stJohns, "2010-11-07T02:30:59Z"), "2010-11-07") // 00:00:59 NDT
        XCTAssertEqual(localDay(&stJohns, "2010-11-07T02:35:00Z"), "2010-11-06") // 23:05 NST
        XCTAssertEqual(localDay(&stJohns, "2010-11-07T03:30:00Z"), "2010-11-07") // 00:00 NST
        // Kolkata went from local mean time (+5:53:20) to +5:21:10 at 18:06:40 UTC on 1869-12-31.
        var kolkata = LocalDayMapper(zone: TimeZone(identifier: "Asia/Kolkata")!)
        XCTAssertEqual(localDay(&kolkata, "1869-12-31T18:06:39Z"), "1869-12-31") // 23:59:59 LMT
        XCTAssertEqual(localDay(&kolkata, "1869-12-31T18:06:41Z"), "1869-12-31") // 23:27:51; the old offset would say 00:00:01
        XCTAssertEqual(localDay(&kolkata, "1869-12-31T18:10:00Z"), "1869-12-31") // 23:31:10
    }

    func testNewYorkDayBoundaryMovesWithDaylightSavingTime() {
        var mapper = LocalDayMapper(zone: TimeZone(identifier: "America/New_York")!)
        // 2020-03-08: clocks go from 02:00 EST to 03:00 EDT at 07:00 UTC.
        XCTAssertEqual(localDay(&mapper, "2020-03-08T04:59:59Z"), "2020-03-07") // 23:59:59 EST
        XCTAssertEqual(localDay(&mapper, "2020-03-08T05:00:00Z"), "2020-03-08") // 00:00 EST
        XCTAssertEqual(localDay(&mapper, "2020-03-08T06:59:59Z"), "2020-03-08") // 01:59:59 EST
        XCTAssertEqual(localDay(&mapper, "2020-03-08T07:00:00Z"), "2020-03-08") // 03:00 EDT
        // After the change the next midnight is at 04:00 UTC, not 05:00.
        XCTAssertEqual(localDay(&mapper, "2020-03-09T03:59:59Z"), "2020-03-08") // 23:59:59 EDT
        XCTAssertEqual(localDay(&mapper, "2020-03-09T04:00:00Z"), "2020-03-09") // 00:00 EDT

        // 2020-11-01: clocks go from 02:00 EDT back to 01:00 EST at 06:00 UTC.
        XCTAssertEqual(localDay(&mapper, "2020-11-01T03:59:59Z"), "2020-10-31") // 23:59:59 EDT
        XCTAssertEqual(localDay(&mapper, "2020-11-01T04:00:00Z"), "2020-11-01") // 00:00 EDT
        XCTAssertEqual(localDay(&mapper, "2020-11-02T04:59:59Z"), "2020-11-01") // 23:59:59 EST
        XCTAssertEqual(localDay(&mapper, "2020-11-02T05:00:00Z"), "2020-11-02") // 00:00 EST
    }

    func testMapperAgreesWithFoundationAcrossAYearInNewYork() {
        let zone = TimeZone(identifier: "America/New_York")!
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        var mapper = LocalDayMapper(zone: zone)
        let start = micros("2020-01-01T00:07:00Z")
        var mismatches = 0
        // Every 37 minutes through 2020 (not aligned to quarter hours).
        for step in stride(from: Int64(0), to: 366 * 24 * 60, by: 37) {
            let instant = start + step * 60_000_000
            let parts = calendar.dateComponents([.year, .month, .day], from: PGTime.date(micros: instant))
            let expected = CivilDate(year: parts.year!, month: parts.month!, day: parts.day!).pgDays
            if mapper.localDay(micros: instant) != expected { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
    }

    func testUTCMapperIsPlainDayDivision() {
        var mapper = LocalDayMapper(zone: TimeZone(identifier: "UTC")!)
        XCTAssertEqual(mapper.localDay(micros: 0), 0)
        XCTAssertEqual(mapper.localDay(micros: -1), -1)
        XCTAssertEqual(mapper.localDay(micros: PGTime.microsPerDay - 1), 0)
        XCTAssertEqual(mapper.localDay(micros: PGTime.microsPerDay), 1)
    }
}
