# Sourced by scripts that need Debian packages: `apt_ensure PKG...` installs those not installed
# yet (checked with dpkg first, so a machine that has them makes no apt call), as root or through
# sudo. Expects a `log` function.
apt_ensure() {
  local sudo="" missing=() p
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "apt packages present: $*"
  fi
}
