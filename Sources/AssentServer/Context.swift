import AssentStore
import Hummingbird

/// Per-request state: the authenticated API key, if any.
public struct AssentRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public var apiKey: APIKey?

    public init(source: Source) {
        self.coreContext = .init(source: source)
        self.apiKey = nil
    }

    /// JSON bodies are small; anything larger is refused with 413 before it is read.
    public var maxUploadSize: Int { 64 * 1024 }
}
