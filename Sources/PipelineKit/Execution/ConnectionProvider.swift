import Foundation

/// Opens the pipeline's named connections for one stage.
public struct ConnectionProvider: Sendable {
    public let pipelineName: String
    public let stageID: String
    public let definitions: [String: ConnectionDefinition]
    let cancellation: Cancellation

    public init(pipelineName: String, stageID: String,
                definitions: [String: ConnectionDefinition], cancellation: Cancellation) {
        self.pipelineName = pipelineName
        self.stageID = stageID
        self.definitions = definitions
        self.cancellation = cancellation
    }

    /// `application_name` for this stage's sessions, cut to PostgreSQL's 63 bytes.
    public var applicationName: String {
        String("runner/\(pipelineName)/\(stageID)".utf8.prefix(63)) ?? "runner"
    }

    /// Opens the named connection and runs `body` with it; the connection is
    /// closed afterwards and can be interrupted by the run's cancellation.
    /// Sessions of `read_only` connections cannot write.
    public func with<R>(_ name: String, _ body: (PGConnection) throws -> R) throws -> R {
        guard let definition = definitions[name] else {
            throw StageFailure.config("connection '\(name)' is not defined")
        }
        try cancellation.check()
        let connection = try PGConnection(definition.info, applicationName: applicationName)
        cancellation.track(connection)
        defer { cancellation.untrack(connection) }
        if definition.readOnly {
            try connection.execute("SET default_transaction_read_only = on")
        }
        try cancellation.check()
        return try body(connection)
    }
}
