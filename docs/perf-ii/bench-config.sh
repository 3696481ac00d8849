# Sourced by profile.sh and instructions.sh: the team key the load uses, and
# `write_config PORT FILE`, a Sluice config with one provider (the mock on PORT) and one team
# whose limits the load never reaches.
KEY=sk-bench-profile-0123456789abcdef
write_config() {
  local sha
  sha=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
  cat > "$2" <<TOML
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$1/v1"
models = ["*"]

[[teams]]
name = "bench"
api_keys_sha256 = ["$sha"]
requests_per_minute = 100000000
tokens_per_minute = 100000000000
max_concurrent_streams = 100000
models = ["*"]
TOML
}
