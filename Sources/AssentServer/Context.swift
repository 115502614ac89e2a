import AssentStore
import Hummingbird

/// Per-request state: the authenticated API key, if any.
public struct AssentRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var apiKey: APIKey?
    /// The peer's IP address, kept as evidence of clicks and form posts.
    public var remoteIP: String?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.apiKey = nil
        self.remoteIP = source.channel.remoteAddress?.ipAddress
    }

    /// JSON bodies are small; anything larger is refused with 413 before it is read.
    public var maxUploadSize: Int { 64 * 1024 }
}
