import AssentCore
import AssentStore
import Foundation
import Hummingbird

/// One typed error for the HTTP layer, rendered once as RFC 9457
/// `application/problem+json`, always naming the offending field when there is one.
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var title: String
    public var detail: String
    public var errors: [ValidationError]
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, title: String? = nil, detail: String, errors: [ValidationError] = []) {
        self.status = status
        self.title = title ?? status.reasonPhrase
        self.detail = detail
        self.errors = errors
    }

    /// 429 with `Retry-After`, for a client address over a limit.
    public static func tooManyRequests(_ what: String, retryAfter: Int) -> APIError {
        var error = APIError(.tooManyRequests, detail: "\(what); retry in \(retryAfter) seconds")
        error.headers[.retryAfter] = String(retryAfter)
        return error
    }

    public static func badRequest(field: String, _ message: String) -> APIError {
        APIError(.badRequest, detail: "\(field): \(message)", errors: [ValidationError(field: field, message)])
    }

    public static func invalid(_ errors: [ValidationError]) -> APIError {
        APIError(.unprocessableContent, title: "Invalid request", detail: errors.map(\.description).joined(separator: "; "), errors: errors)
    }

    public static func invalid(field: String, _ message: String) -> APIError {
        invalid([ValidationError(field: field, message)])
    }

    var problemType: String {
        switch status.code {
        case 400: "urn:assent:problem:malformed-request"
        case 401: "urn:assent:problem:unauthorized"
        case 403: "urn:assent:problem:forbidden"
        case 404: "urn:assent:problem:not-found"
        case 409: "urn:assent:problem:conflict"
        case 410: "urn:assent:problem:gone"
        case 413: "urn:assent:problem:body-too-large"
        case 415: "urn:assent:problem:unsupported-media-type"
        case 422: "urn:assent:problem:validation"
        case 429: "urn:assent:problem:rate-limited"
        case 503: "urn:assent:problem:unavailable"
        default: status.code >= 500 ? "urn:assent:problem:internal" : "about:blank"
        }
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var body: [String: Any] = ["type": problemType, "title": title, "status": Int(status.code), "detail": detail]
        if !errors.isEmpty {
            body["errors"] = errors.map { ["field": $0.field, "message": $0.message] }
        }
        let data = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        let bodyWithNewline = data + Data("\n".utf8)
        var headers = headers
        headers[.contentType] = "application/problem+json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bodyWithNewline)))
    }

    /// Translates domain and store errors into their HTTP meaning.
    static func from(_ error: any Error) -> APIError? {
        switch error {
        case let e as APIError:
            return e
        case let e as DomainError:
            switch e {
            case .invalid(let errors): return .invalid(errors)
            case .notFound(let what, let id): return APIError(.notFound, detail: "\(what) '\(id)' not found")
            case .conflict(let field, let message):
                return APIError(.conflict, detail: "\(field): \(message)", errors: [ValidationError(field: field, message)])
            case .contention: return APIError(.serviceUnavailable, detail: e.description)
            case .gone: return APIError(.gone, detail: e.description)
            }
        case let e as StoreError:
            switch e {
            case .duplicate(let field, let value):
                return APIError(.conflict, detail: "\(field) '\(value)' is already in use", errors: [ValidationError(field: field, "'\(value)' is already in use")])
            case .notFound(let what, let id): return APIError(.notFound, detail: "\(what) '\(id)' not found")
            case .concurrentModification: return APIError(.serviceUnavailable, detail: "concurrent modification; retry")
            case .unavailable: return APIError(.serviceUnavailable, detail: "the database is not reachable")
            }
        case let e as HTTPError:
            let status = e.status
            let detail: String = switch status.code {
            case 404: "no such resource"
            case 405: "method not allowed on this resource"
            case 413: "request body is too large"
            default: e.body ?? status.reasonPhrase
            }
            return APIError(status, detail: detail)
        case let e as any HTTPResponseError:
            return APIError(e.status, detail: e.status.code == 413 ? "request body is too large" : e.status.reasonPhrase)
        default:
            return nil
        }
    }
}

/// Renders every error as problem+json; unexpected errors become a 500 that
/// reveals nothing internal (the log has the detail).
struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            if let apiError = APIError.from(error) {
                return try apiError.response(from: request, context: context)
            }
            context.logger.error("unhandled error: \(String(reflecting: error))")
            return try APIError(.internalServerError, detail: "internal error; see the server log")
                .response(from: request, context: context)
        }
    }
}
