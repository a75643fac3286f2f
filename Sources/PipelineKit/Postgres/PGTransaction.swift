import Foundation

extension PGConnection {
    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    public func transaction<R>(_ begin: String = "BEGIN", _ body: () throws -> R) throws -> R {
        try execute(begin)
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            _ = try? execute("ROLLBACK")
            throw error
        }
    }

    /// A short transaction creating schema objects. `IF NOT EXISTS` is not
    /// safe against a concurrent creator, so such transactions take turns
    /// on one advisory lock.
    public func schemaChange(_ body: () throws -> Void) throws {
        try transaction {
            try query("SELECT pg_advisory_xact_lock(hashtextextended('pipelinekit:ddl', 0))")
            try body()
        }
    }
}
