import Foundation
import PipelineKit
import XCTest

/// Connection strings mean what they mean to psql: libpq parses them.
final class ConnectionTests: XCTestCase {
    func testAURIAndAConninfoReachTheSameDatabase() throws {
        let conninfo = try TestDatabase.createDatabase("conn")
        let options = try ConnInfo(conninfo).parsed()
        let host = try XCTUnwrap(options["host"]), port = try XCTUnwrap(options["port"]), dbname = try XCTUnwrap(options["dbname"])
        let encodedHost = host.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? host
        let uri = "postgresql://postgres@:\(port)/\(dbname)?host=\(encodedHost)"
        let viaURI = try PGConnection(ConnInfo(uri), applicationName: "t")
        XCTAssertEqual(viaURI.resolvedDatabase, dbname)
        XCTAssertEqual(viaURI.resolvedPort, port)
    }

    func testPGEnvironmentVariablesFillWhatTheStringLeavesOut() throws {
        let conninfo = try TestDatabase.createDatabase("conn")
        let options = try ConnInfo(conninfo).parsed()
        setenv("PGDATABASE", options["dbname"]!, 1)
        defer { unsetenv("PGDATABASE") }
        let connection = try PGConnection(ConnInfo("host=\(options["host"]!) port=\(options["port"]!) user=postgres"), applicationName: "t")
        XCTAssertEqual(connection.resolvedDatabase, options["dbname"])
    }

    func testTheApplicationNameIsSetEvenWhenTheStringNamesAnother() throws {
        let conninfo = try TestDatabase.createDatabase("conn") + " application_name=other"
        let connection = try PGConnection(ConnInfo(conninfo), applicationName: "runner/p/s")
        XCTAssertEqual(try connection.query("SHOW application_name").string(0, 0), "runner/p/s")
    }

    func testAServerErrorCarriesSQLStateDetailHintAndNoPassword() throws {
        let secret = "pw-\(UUID().uuidString.prefix(6))"
        let connection = try PGConnection(ConnInfo(try TestDatabase.createDatabase("conn") + " password=\(secret)"), applicationName: "t")
        XCTAssertThrowsError(try connection.execute("SELEC 1")) { error in
            let error = error as! PGError
            XCTAssertEqual(error.sqlState, "42601")
            XCTAssertFalse(error.isTransient)
            XCTAssertFalse(error.description.contains(secret))
            XCTAssertTrue(error.description.contains("dbname=conn_"), error.description)
        }
        XCTAssertThrowsError(try connection.execute("DO $$ BEGIN RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint', ERRCODE = '40001'; END $$")) { error in
            let error = error as! PGError
            XCTAssertEqual(error.detail, "the detail")
            XCTAssertEqual(error.hint, "the hint")
            XCTAssertTrue(error.isTransient, "40001 is a serialization failure")
        }
    }

    func testASessionNameIsCutToPostgres63BytesBetweenCharacters() {
        let name = ConnectionProvider.applicationName("runner/a" + String(repeating: "é", count: 30) + "/lineage")
        XCTAssertLessThanOrEqual(name.utf8.count, 63)
        XCTAssertTrue(name.hasPrefix("runner/aéé"), name)
    }
}
