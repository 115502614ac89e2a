import Foundation
import Hummingbird
import NIOCore
import NIOHTTPTypes

/// Every request to the pages people reach from emails, forms and the portal
/// (`/f/`, `/p/`, `/u/`, `/r/`, `/confirm/`, `/portal`) counts against one limit
/// per client address, on top of each page's stricter limit on posts: loading
/// pages or trying tokens in a loop is answered 429 with `Retry-After`.
struct PublicPageLimitMiddleware: RouterMiddleware {
    typealias Context = AssentRequestContext
    static let prefixes = ["/f/", "/p/", "/u/", "/r/", "/confirm/", "/portal"]
    let limiter: RateLimiter
    let pages: Pages

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        guard Self.prefixes.contains(where: { path.hasPrefix($0) }) else { return try await next(request, context) }
        let admitted = await limiter.admit(context.remoteIP ?? "unknown")
        guard admitted.allowed else {
            if request.headers[.accept]?.contains("application/json") == true {
                return try APIError.tooManyRequests("too many requests from this address", retryAfter: admitted.retryAfter)
                    .response(from: request, context: context)
            }
            return pages.tooMany(retryAfter: admitted.retryAfter, language: pages.language(request: request))
        }
        return try await next(request, context)
    }
}

/// Closes a connection whose request body has not fully arrived `timeout`
/// after its head (a client trickling a body holds a connection and a task
/// for as long as it likes otherwise). Slow headers are caught by the HTTP
/// server's idle timeout, which runs until a request head is complete.
final class SlowBodyHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    let timeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            deadline?.cancel()
            let channel = context.channel
            deadline = context.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        case .end:
            deadline?.cancel()
            deadline = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }
}
