import CLibPQ
import Foundation

/// One libpq connection. Not thread-safe except for `cancel()`, which another
/// thread may call to interrupt a running statement.
public final class PGConnection: @unchecked Sendable {
    private let conn: OpaquePointer
    private let cancelLock = NSLock()
    private var cancelHandle: OpaquePointer?
    /// The connection target without password, for messages.
    public let target: String

    /// Opens a connection. `application_name` is set so that a DBA sees in
    /// `pg_stat_activity` which pipeline and stage a session belongs to, and
    /// the client encoding is UTF-8; every other setting (host, port, user,
    /// password, `.pgpass`, `PG*` variables, sslmode...) is left to libpq
    /// exactly as psql would resolve it.
    /// `name` is the pipeline's name for the connection, for error messages.
    public init(_ info: ConnInfo, applicationName: String, name: String? = nil, connectTimeout: Int = 10) throws {
        let options = try info.parsed()
        target = ConnInfo.redacted(options)
        // Text is decoded and encoded as UTF-8 whatever the database's encoding:
        // the server converts, as it does for psql in a UTF-8 locale.
        var keys = ["dbname", "application_name", "client_encoding"]
        var values = [info.raw, applicationName, "UTF8"]
        // A timeout the user chose, in the string or in PGCONNECT_TIMEOUT, stands.
        if (options["connect_timeout"] ?? "").isEmpty && ProcessInfo.processInfo.environment["PGCONNECT_TIMEOUT"] == nil {
            keys.append("connect_timeout")
            values.append(String(connectTimeout))
        }
        let connection: OpaquePointer? = withCStrings(keys) { keyPtrs in
            withCStrings(values) { valuePtrs in
                PQconnectdbParams(keyPtrs, valuePtrs, 1)
            }
        }
        guard let connection else {
            throw PGError(kind: .connection, message: "out of memory opening a connection", target: target)
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(connection))
            let refused = PGError.isRefusal(message) || PQconnectionNeedsPassword(connection) == 1
            PQfinish(connection)
            throw PGError(kind: refused ? .refused : .connection,
                          message: "could not connect\(name.map { " with connection '\($0)'" } ?? ""): "
                              + message.trimmingCharacters(in: .whitespacesAndNewlines),
                          hint: refused
                              ? "the login was refused, so it is not retried: check the user, the password (${VAR}, PGPASSWORD or ~/.pgpass), the database name, sslmode and the server's pg_hba.conf"
                              : "check that the server is running and that the connection string, PG* variables and .pgpass are right",
                          target: target)
        }
        conn = connection
        cancelHandle = PQgetCancel(connection)
        // Server notices ("schema already exists, skipping") are not for the user's terminal.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
    }

    deinit {
        cancelLock.withLock {
            if let cancelHandle { PQfreeCancel(cancelHandle) }
            cancelHandle = nil
        }
        PQfinish(conn)
    }

    public var isAlive: Bool { PQstatus(conn) == CONNECTION_OK }

    /// Whether the session, as far as the client knows, can serve another
    /// statement as it is: connected, and outside any transaction or COPY.
    /// (A session the server ended is only noticed when next used.)
    var isIdle: Bool { PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE }

    /// Server process id, for `pg_terminate_backend` in tests and for logs.
    public var backendPID: Int32 { PQbackendPID(conn) }

    /// Database, host and port as libpq resolved them (after defaults and PG* variables).
    public var resolvedDatabase: String { PQdb(conn).map { String(cString: $0) } ?? "" }
    public var resolvedHost: String { PQhost(conn).map { String(cString: $0) } ?? "" }
    public var resolvedPort: String { PQport(conn).map { String(cString: $0) } ?? "" }

    /// Asks the server to cancel the statement running on this connection.
    public func cancel() {
        cancelLock.withLock {
            guard let cancelHandle else { return }
            var buffer = [CChar](repeating: 0, count: 256)
            _ = PQcancel(cancelHandle, &buffer, Int32(buffer.count))
        }
    }

    /// Runs one or more statements without parameters (DDL, BEGIN, COMMIT...).
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        try check(PQexec(conn, sql))
    }

    /// Runs one statement with text-format parameters (`$1`, `$2`...); values
    /// never become part of the SQL text.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PGResult {
        let result: OpaquePointer? = withOptionalCStrings(parameters) { pointers in
            PQexecParams(conn, sql, Int32(parameters.count), nil, pointers, nil, nil, 0)
        }
        return try check(result)
    }

    /// Streams `COPY ... TO STDOUT`; `body` receives each row's bytes as libpq
    /// hands them over (one row per call, header included in the first one for
    /// binary format).
    public func copyOut(_ sql: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let start = PQexec(conn, sql)
        guard PQresultStatus(start) == PGRES_COPY_OUT else {
            _ = try check(start)
            throw PGError(kind: .protocolViolation, message: "statement did not start COPY OUT: \(sql.prefix(80))")
        }
        PQclear(start)
        var failure: Error?
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let length = PQgetCopyData(conn, &buffer, 0)
            if length > 0, let buffer {
                if failure == nil {
                    do { try body(UnsafeRawBufferPointer(start: buffer, count: Int(length))) }
                    catch {
                        failure = error
                        cancel()
                    }
                }
                PQfreemem(buffer)
            } else if length == -1 {
                break
            } else {
                let message = String(cString: PQerrorMessage(conn))
                throw PGError(kind: .connection, message: "COPY interrupted: " + message.trimmingCharacters(in: .whitespacesAndNewlines), target: target)
            }
        }
        // Drain every pending result so the connection is usable again.
        var serverError: PGError?
        while let result = PQgetResult(conn) {
            let status = PQresultStatus(result)
            if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && serverError == nil {
                serverError = PGError(result: result, connection: conn, target: target)
            }
            PQclear(result)
        }
        if let failure { throw failure }
        if let serverError { throw serverError }
    }

    /// Runs `COPY ... FROM STDIN`; `body` is handed a writer to send data with.
    /// Returns the number of rows the server reports as copied.
    @discardableResult
    public func copyIn(_ sql: String, _ body: (CopyInWriter) throws -> Void) throws -> Int {
        let start = PQexec(conn, sql)
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            _ = try check(start)
            throw PGError(kind: .protocolViolation, message: "statement did not start COPY IN: \(sql.prefix(80))")
        }
        PQclear(start)
        let writer = CopyInWriter(conn: conn, target: target)
        do {
            try body(writer)
            try writer.flush()
            guard PQputCopyEnd(conn, nil) == 1 else { throw writer.connectionError("ending COPY") }
        } catch {
            _ = PQputCopyEnd(conn, "aborted by client")
            while let result = PQgetResult(conn) { PQclear(result) }
            throw error
        }
        var copied = 0
        var serverError: PGError?
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                copied = Int(String(cString: PQcmdTuples(result))) ?? 0
            } else if serverError == nil {
                serverError = PGError(result: result, connection: conn, target: target)
            }
            PQclear(result)
        }
        if let serverError { throw serverError }
        return copied
    }

    private func check(_ result: OpaquePointer?) throws -> PGResult {
        guard let result else {
            throw PGError(result: nil, connection: conn, target: target)
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return PGResult(result)
        default:
            let error = PGError(result: result, connection: conn, target: target)
            PQclear(result)
            throw error
        }
    }
}

/// Buffers COPY FROM STDIN data and hands it to libpq in large chunks.
public final class CopyInWriter {
    private let conn: OpaquePointer
    private let target: String
    private var buffer: [UInt8] = []
    private let chunk = 1 << 18

    init(conn: OpaquePointer, target: String) {
        self.conn = conn
        self.target = target
        buffer.reserveCapacity(chunk + 4096)
    }

    public func write(_ text: String) throws {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= chunk { try flush() }
    }

    public func write(bytes: some Sequence<UInt8>) throws {
        buffer.append(contentsOf: bytes)
        if buffer.count >= chunk { try flush() }
    }

    func flush() throws {
        guard !buffer.isEmpty else { return }
        let status = buffer.withUnsafeBufferPointer { pointer in
            pointer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: pointer.count) {
                PQputCopyData(conn, $0, Int32(pointer.count))
            }
        }
        guard status == 1 else { throw connectionError("sending COPY data") }
        buffer.removeAll(keepingCapacity: true)
    }

    func connectionError(_ what: String) -> PGError {
        let message = String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PGError(kind: .connection, message: "\(what): \(message)", target: target)
    }
}

/// A finished query result in text format.
public final class PGResult: @unchecked Sendable {
    private let result: OpaquePointer

    init(_ result: OpaquePointer) { self.result = result }
    deinit { PQclear(result) }

    public var rowCount: Int { Int(PQntuples(result)) }
    public var columnCount: Int { Int(PQnfields(result)) }
    /// Rows affected by INSERT/UPDATE/DELETE, as the server reports them.
    public var affectedRows: Int { Int(String(cString: PQcmdTuples(result))) ?? 0 }

    public func columnName(_ column: Int) -> String { String(cString: PQfname(result, Int32(column))) }
    public func columnType(_ column: Int) -> UInt32 { PQftype(result, Int32(column)) }

    public func isNull(_ row: Int, _ column: Int) -> Bool { PQgetisnull(result, Int32(row), Int32(column)) == 1 }

    public func string(_ row: Int, _ column: Int) -> String? {
        isNull(row, column) ? nil : String(cString: PQgetvalue(result, Int32(row), Int32(column)))
    }

    public func int(_ row: Int, _ column: Int) -> Int? { string(row, column).flatMap { Int($0) } }

    /// All rows as optional strings, for small results and tests.
    public var rows: [[String?]] {
        (0..<rowCount).map { row in (0..<columnCount).map { string(row, $0) } }
    }
}

private func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    var pointers = strings.map { UnsafePointer(strdup($0)) }
    defer { pointers.forEach { free(UnsafeMutablePointer(mutating: $0)) } }
    pointers.append(nil)
    return body(pointers)
}

private func withOptionalCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let pointers = strings.map { $0.map { UnsafePointer(strdup($0)!) } }
    defer { pointers.forEach { $0.map { free(UnsafeMutablePointer(mutating: $0)) } } }
    return body(pointers)
}
