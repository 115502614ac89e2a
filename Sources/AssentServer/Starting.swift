import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import UnixSignals

/// Runs `body` (opening and migrating the database) while a stand-in server on
/// the configured address answers `/healthz` with 200 and `/readyz`, like every
/// other path, with 503 "starting". An orchestrator's probes then see a live
/// process that is not ready, instead of a refused connection that its
/// liveness probe could take for a hung one, however long a migration takes.
/// The stand-in stops before `body`'s result is returned, so that the real
/// server can listen on the address. With port 0 (picked at start-up) nobody
/// could probe it, so none runs.
public func whileStarting<T: Sendable>(host: String, port: Int, logger: Logger, _ body: () async throws -> T) async throws -> T {
    guard port != 0 else { return try await body() }
    let responder = CallbackResponder<BasicRequestContext> { request, context in
        if request.uri.path == "/healthz" {
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: "{\"status\":\"ok\"}\n")))
        }
        var error = APIError(.serviceUnavailable, detail: "Assent is starting: the database is being opened and migrated; try again shortly")
        error.headers[.retryAfter] = "5"
        return try error.response(from: request, context: context)
    }
    var quiet = logger
    quiet.logLevel = max(logger.logLevel, .warning)
    let standIn = Application(responder: responder, configuration: .init(address: .hostname(host, port: port), serverName: "Assent"), logger: quiet)
    let group = ServiceGroup(configuration: .init(services: [standIn], logger: quiet))
    // If the address cannot be bound, the real server will say so; the stand-in only helps.
    let running = Task { try? await group.run() }
    let result: T
    do {
        result = try await body()
    } catch {
        await group.triggerGracefulShutdown()
        await running.value
        throw error
    }
    await group.triggerGracefulShutdown()
    await running.value
    return result
}

/// `body`'s outcome, or nil when it takes longer than `seconds`; `body` is then
/// cancelled and left to finish on its own, so a call that ignores cancellation
/// (a query waiting for a connection) cannot hold the caller.
func firstOf(seconds: Double, _ body: @escaping @Sendable () async throws -> Void) async -> Result<Void, any Error>? {
    final class Once: @unchecked Sendable {
        private let lock = NSLock()
        private var continuation: CheckedContinuation<Result<Void, any Error>?, Never>?
        init(_ continuation: CheckedContinuation<Result<Void, any Error>?, Never>) { self.continuation = continuation }
        func resume(_ value: Result<Void, any Error>?) {
            lock.withLock {
                continuation?.resume(returning: value)
                continuation = nil
            }
        }
    }
    var work: Task<Void, Never>?
    var timer: Task<Void, Never>?
    let outcome = await withCheckedContinuation { continuation in
        let once = Once(continuation)
        work = Task {
            do {
                try await body()
                once.resume(.success(()))
            } catch {
                once.resume(.failure(error))
            }
        }
        timer = Task {
            try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
            once.resume(nil)
        }
    }
    work?.cancel()
    timer?.cancel()
    return outcome
}

/// Runs the application until SIGTERM or SIGINT, then stops it gracefully after `drain`.
/// Hummingbird's graceful shutdown closes at once every connection with no request in
/// progress, so a request already sent whose bytes the server had not yet read (an event
/// loop a few tens of milliseconds behind under load) went unanswered; serving on for a
/// moment first lets those be read, and then answered before the connection closes.
public func runUntilStopped(_ app: some ApplicationProtocol & Service, drain: Duration = .milliseconds(250), logger: Logger) async throws {
    let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
    let signals = Task {
        for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
            try? await Task.sleep(for: drain)
            await group.triggerGracefulShutdown()
            return
        }
    }
    defer { signals.cancel() }
    try await group.run()
}
