import Foundation

/// Opens the pipeline's named connections for one stage.
public struct ConnectionProvider: Sendable {
    public let pipelineName: String
    public let stageID: String
    public let definitions: [String: ConnectionDefinition]
    let cancellation: Cancellation
    /// The run's idle sessions; without one every `with` opens its own.
    let pool: SessionPool?
    /// Reports sessions that wait for another session's lock; none without it.
    let lockWaits: LockWaits?

    public init(pipelineName: String, stageID: String, definitions: [String: ConnectionDefinition],
                cancellation: Cancellation, pool: SessionPool? = nil, lockWaits: LockWaits? = nil) {
        self.pipelineName = pipelineName
        self.stageID = stageID
        self.definitions = definitions
        self.cancellation = cancellation
        self.pool = pool
        self.lockWaits = lockWaits
    }

    /// `application_name` for this stage's sessions.
    public var applicationName: String { Self.applicationName("runner/\(pipelineName)/\(stageID)") }

    /// `name` cut to PostgreSQL's 63 bytes between characters, from the end
    /// (or, `keepingEnd`, from the front).
    public static func applicationName(_ name: String, keepingEnd: Bool = false) -> String {
        var bytes = 0
        let fits = { (character: Character) -> Bool in
            bytes += character.utf8.count
            return bytes <= 63
        }
        return keepingEnd ? String(String(name.reversed().prefix(while: fits)).reversed()) : String(name.prefix(while: fits))
    }

    /// Runs `body` with a session of the named connection: an idle one of
    /// the run's when there is one, else a new one. The session can be
    /// interrupted by the run's cancellation; afterwards it goes back to the
    /// run's pool if `body` succeeded and left it idle, and is closed
    /// otherwise. Sessions of `read_only` connections cannot write.
    public func with<R>(_ name: String, _ body: (PGConnection) throws -> R) throws -> R {
        let connection = try borrow(name)
        var succeeded = false
        defer { giveBack(connection, name, keep: succeeded) }
        try cancellation.check()
        let result = try body(connection)
        succeeded = true
        return result
    }

    /// A session as `with` gets it, held until `giveBack`: for work that
    /// goes on after the call that started it, such as a transaction kept
    /// open so that later reads see the same snapshot.
    public func borrow(_ name: String) throws -> PGConnection {
        guard let definition = definitions[name] else {
            throw StageFailure.config("connection '\(name)' is not defined")
        }
        try cancellation.check()
        var reused: PGConnection?
        while reused == nil, let idle = pool?.take(name) {
            // Naming the session for this stage also proves it still works:
            // the server may have ended it meanwhile (then it is dropped).
            if (try? idle.query("SELECT set_config('application_name', $1, false)", [applicationName])) != nil { reused = idle }
        }
        let connection = try reused ?? open(definition)
        cancellation.track(connection)
        lockWaits?.watch(connection, connection: name, stageID: stageID, applicationName: applicationName)
        return connection
    }

    /// A new session of the named connection, for the run's pool to hand
    /// out; nil when it cannot be opened (the stage that needs one reports why).
    func opened(_ name: String) -> PGConnection? {
        guard let definition = definitions[name], !cancellation.isCancelled else { return nil }
        return try? open(definition)
    }

    private func open(_ definition: ConnectionDefinition) throws -> PGConnection {
        let connection = try PGConnection(definition.info, applicationName: applicationName, name: definition.name)
        if definition.readOnly {
            try connection.execute("SET default_transaction_read_only = on")
        }
        return connection
    }

    /// Ends a `borrow`: the session goes back to the run's pool when `keep`
    /// and it is idle, and is closed otherwise (when its last reference goes).
    public func giveBack(_ connection: PGConnection, _ name: String, keep: Bool = true) {
        cancellation.untrack(connection)
        lockWaits?.unwatch(connection)
        if keep { pool?.give(connection, connection: name) }
    }
}
