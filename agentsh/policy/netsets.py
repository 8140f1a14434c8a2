"""Named sets of network destinations that profiles and users can allow.

Each entry is a host pattern, optionally with a port: "api.anthropic.com",
"*.npmjs.org", "github.com:443". A `*.` prefix matches any subdomain (not the
bare domain). Without a port, 443 and 80 are meant.
"""

SETS = {
    "anthropic": ["api.anthropic.com", "console.anthropic.com", "platform.claude.com", "statsig.anthropic.com",
                  "claude.ai"],
    "openai": ["api.openai.com", "auth.openai.com", "chatgpt.com"],
    "google": ["generativelanguage.googleapis.com", "oauth2.googleapis.com", "cloudcode-pa.googleapis.com",
               "accounts.google.com", "www.googleapis.com"],
    "registries": ["registry.npmjs.org", "*.npmjs.org", "pypi.org", "files.pythonhosted.org",
                   "crates.io", "static.crates.io", "index.crates.io", "proxy.golang.org", "sum.golang.org",
                   "deb.debian.org", "security.debian.org"],
    "github": ["github.com", "api.github.com", "codeload.github.com", "objects.githubusercontent.com",
               "raw.githubusercontent.com", "ghcr.io", "*.githubusercontent.com"],
    # GitHub Copilot's API (opencode's github-copilot provider) and the exchange of a GitHub login for its tokens
    "copilot": ["api.github.com", "api.githubcopilot.com", "*.githubcopilot.com"],
}
