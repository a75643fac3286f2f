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

    func testARefusedLoginIsNotRetriedButAnUnreachableServerIs() throws {
        let options = try ConnInfo(try TestDatabase.createDatabase("conn")).parsed()
        let server = "host=\(options["host"]!) port=\(options["port"]!)"
        for (conninfo, refused) in [
            ("\(server) user=postgres dbname=pipelinekit_no_such_db", true),
            ("\(server) user=pipelinekit_no_such_role dbname=postgres", true),
            ("host=/tmp/pipelinekit-no-such-dir port=5 dbname=postgres connect_timeout=2", false),
        ] {
            XCTAssertThrowsError(try PGConnection(ConnInfo(conninfo), applicationName: "t")) { error in
                let error = error as! PGError
                XCTAssertEqual(error.kind, refused ? .refused : .connection, error.description)
                XCTAssertEqual(error.isTransient, !refused, error.description)
                XCTAssertEqual(error.hint?.hasPrefix("the login was refused, so it is not retried"), refused, error.description)
            }
        }
        for message in ["FATAL:  password authentication failed for user \"etl\"",
                        "fe_sendauth: no password supplied",
                        "FATAL:  no pg_hba.conf entry for host \"10.0.0.1\", user \"etl\", database \"dw\", no encryption"] {
            XCTAssertTrue(PGError.isRefusal(message), message)
        }
        XCTAssertFalse(PGError.isRefusal("connection to server on socket \"/tmp/.s.PGSQL.5432\" failed: No such file or directory"))
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
