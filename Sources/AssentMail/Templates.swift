import Foundation
import Mustache

/// Email templates: the shipped ones (English and German) and an optional
/// folder of the organisation's own, laid out the same way
/// (`<locale>/<name>.<part>.mustache`), whose files take precedence.
public struct MailTemplates: Sendable {
    let library: MustacheLibrary
    public let locales: Set<String>

    /// Loads the shipped templates, then the overrides from `directory` if given.
    public init(overrides directory: String? = nil) async throws {
        guard let shipped = Bundle.module.resourceURL?.appendingPathComponent("Templates").path else {
            throw MailError.permanent("the shipped email templates are missing")
        }
        var library = try await MustacheLibrary(directory: shipped)
        var locales = Self.locales(in: shipped)
        if let directory {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw MailError.permanent("templates folder \(directory) does not exist")
            }
            let custom = try await MustacheLibrary(directory: directory)
            for name in Self.templateNames(in: directory) {
                if let template = custom.getTemplate(named: name) { library.register(template, named: name) }
            }
            locales.formUnion(Self.locales(in: directory))
        }
        self.library = library
        self.locales = locales
    }

    /// `de-AT` -> `de` -> `en`: the best shipped or overridden language for a contact.
    public func locale(for requested: String?) -> String {
        guard let requested = requested?.lowercased() else { return "en" }
        if locales.contains(requested) { return requested }
        let language = String(requested.prefix { $0 != "-" && $0 != "_" })
        return locales.contains(language) ? language : "en"
    }

    /// Renders `<locale>/<name>.<part>`, falling back to English when a locale lacks that part.
    public func render(_ name: String, part: String, locale: String, model: [String: Any]) throws -> String {
        for candidate in [locale, "en"] {
            if let output = library.render(model, withTemplate: "\(candidate)/\(name).\(part)") { return output }
        }
        throw MailError.permanent("no template \(name).\(part) for \(locale) or en")
    }

    private static func templateNames(in directory: String) -> [String] {
        let root = URL(fileURLWithPath: directory)
        let enumerator = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)
        var names: [String] = []
        while let url = enumerator?.nextObject() as? URL {
            guard url.pathExtension == "mustache" else { continue }
            let relative = url.path.dropFirst(root.path.count + 1)
            names.append(String(relative.dropLast(".mustache".count)))
        }
        return names
    }

    private static func locales(in directory: String) -> Set<String> {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return Set(entries.filter { entry in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: directory + "/" + entry, isDirectory: &isDirectory) && isDirectory.boolValue
        }.map { $0.lowercased() })
    }
}
