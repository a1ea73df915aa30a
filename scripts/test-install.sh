#!/usr/bin/env bash
# test-install.sh (`npm run test:install`) — installs the packed packages the way a user does, in empty projects, with
# no C/C++/CUDA compiler on the PATH and no network, and checks that they work:
#
#   1. scripts/prebuild.sh packs the three tarballs (main, @sharedformer/linux-x64, and @sharedformer/linux-x64-cuda
#      when nvcc is present) into a temporary folder.
#   2. prebuilt: `npm install --offline --ignore-scripts sharedformer.tgz linux-x64.tgz` in an empty project, with a
#      PATH from which every C, C++ and CUDA compiler is hidden; then install-smoke.mjs imports sharedformer, checks
#      the addon came from @sharedformer/linux-x64, trains a shared-weight decoder for 8 steps (the loss falls) and
#      generates from it, and prints backends().
#   3. CUDA package (when packed): the same with the CUDA tarball added: the addon comes from
#      @sharedformer/linux-x64-cuda, has CUDA kernels, and on a machine without a GPU runs on the CPU with the reason
#      in backends().cuda.reason.
#   4. main package alone: `npm install --offline --ignore-scripts sharedformer.tgz` (no compiler): using it throws
#      the loader's error naming every place tried and the fix for each (the text is checked).
#   5. source build in that project: `npm install --offline --save-dev cmake-js@8.0.0`, then with the C/C++ compiler
#      back on the PATH (nvcc still hidden, so CMake builds the CPU kernels only) `npm run build` inside
#      node_modules/sharedformer; then step 2's smoke test passes against node_modules/sharedformer/build/Release.
#
# Ends with `N passed, N failed`. The test owns its npm cache: npm_config_cache points into its temporary folder for
# every npm command it runs, so it never reads or writes ~/.npm and behaves the same on a new machine. It first fills
# that cache online with exactly what a user's `npm install` fetches — the main package's dependencies at their
# pinned versions (bindings, node-addon-api) and cmake-js@8.0.0 for the source build, each with its whole dependency
# tree (registry metadata and tarballs) — then runs every install `--offline` against it.
#
# Environment: everything prebuild.sh reads (SHAREDFORMER_PREBUILT_CPU / SHAREDFORMER_PREBUILT_CUDA pass already-built
# binaries, SHAREDFORMER_PREBUILD_CUDA=off skips the CUDA package); SHAREDFORMER_KEEP_TMP=1 keeps the temporary folder.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sf-install-test.XXXXXX")
[ "${SHAREDFORMER_KEEP_TMP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
t_start=$SECONDS
# The test's own npm cache (see the header): nothing in the home folder is read or written.
export npm_config_cache="$tmp/npm-cache" npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

ok() { echo "ok - $*"; pass=$((pass + 1)); }
notok() { echo "not ok - $*"; fail=$((fail + 1)); }
# check "what" command...: runs the command, counts it, shows its output when it fails.
check() {
  local what=$1 log="$tmp/check-$((pass + fail)).log"
  shift
  if "$@" >"$log" 2>&1; then ok "$what"; else notok "$what"; sed 's/^/    | /' "$log" | tail -40; fi
}
# smoke DIR ARGS...: runs install-smoke.mjs in project DIR; each of its `ok` / `not ok` lines is a counted check.
smoke() {
  local dir=$1 log
  shift
  log="$dir/smoke.log"
  cp scripts/install-smoke.mjs "$dir/"
  (cd "$dir" && PATH="$nocc" node install-smoke.mjs "$@") >"$log" 2>&1
  local rc=$? p f
  sed 's/^/    /' "$log" | grep -vE '^    (ok|not ok) - '
  grep -E '^(ok|not ok) - ' "$log"
  p=$(grep -cE '^ok - ' "$log"); f=$(grep -cE '^not ok - ' "$log")
  pass=$((pass + p)); fail=$((fail + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then notok "install-smoke.mjs $* exited with $rc"; tail -20 "$log"; fi
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then notok "install-smoke.mjs $* ran no checks"; fi
}

# masked_path NAME REGEX: a folder of links to the first executable of each name on the PATH, except names matching
# REGEX (the compilers). Using it as the whole PATH hides the compilers and keeps every other tool.
masked_path() {
  local dir="$tmp/path-$1"
  mkdir -p "$dir"
  node -e '
    const fs = require("fs"), path = require("path");
    const [dir, rx] = process.argv.slice(1);
    const hide = new RegExp(rx);
    for (const d of process.env.PATH.split(":")) {
      let names;
      try { names = fs.readdirSync(d); } catch { continue; }
      for (const n of names) {
        const f = path.join(d, n), link = path.join(dir, n);
        if (hide.test(n) || fs.existsSync(link)) continue;
        try { const st = fs.statSync(f); if (!st.isFile() || !(st.mode & 0o111)) continue; } catch { continue; }
        fs.symlinkSync(f, link);
      }
    }' "$dir" "$2"
  echo "$dir"
}
compilers='^((x86_64-(pc|linux)-(linux-)?gnu-)?(cc|c\+\+|gcc|g\+\+|cpp|c89|c99|clang|clang\+\+|clang-cpp|icc|icpc|icx|icpx|tcc|nvcc)(-[0-9.]+)?)$'
nocc=$(masked_path nocc "$compilers")
nocuda=$(masked_path nocuda '^nvcc$')

echo "=== test:install: filling its own npm cache ($npm_config_cache), online"
# What the installs below need from the registry, at the versions a user gets: the main package's dependencies as
# pinned in package.json, and cmake-js at the version the README's source build names. An online install into a
# throwaway project fetches each with its dependency tree (metadata and tarballs) into the cache; `npm cache add`
# alone would not fetch the dependencies of cmake-js.
cmakejs_version=8.0.0
mapfile -t cache_specs < <(node -e '
  const p = require("./package.json");
  for (const [n, v] of Object.entries(p.dependencies)) console.log(`${n}@${v}`);
  console.log(`cmake-js@${process.argv[1]}`);' "$cmakejs_version")
fill_cache() {
  local d="$tmp/cache-fill"
  mkdir -p "$d" && echo '{ "name": "sf-cache-fill", "private": true }' >"$d/package.json"
  (cd "$d" && npm cache add "${cache_specs[@]}" && npm install --ignore-scripts --no-save "${cache_specs[@]}") && rm -rf "$d"
}
check "npm cache add + online install of ${cache_specs[*]} into the test's own cache" fill_cache

echo "=== test:install: packing (scripts/prebuild.sh)"
if bash scripts/prebuild.sh "$tmp/packages"; then ok "prebuild.sh packed the packages"; else
  notok "prebuild.sh packed the packages"; echo "$pass passed, $fail failed"; exit 1
fi
version=$(node -p "require('./package.json').version")
main_tgz="$tmp/packages/sharedformer-$version.tgz"
cpu_tgz="$tmp/packages/sharedformer-linux-x64-$version.tgz"
cuda_tgz="$tmp/packages/sharedformer-linux-x64-cuda-$version.tgz"
cat "$tmp/packages/sizes.md"
node scripts/package-sizes.mjs "$tmp/packages/sizes.json" --check \
  || echo "warning: the sizes in README.md / docs/packaging.md are out of date: node scripts/package-sizes.mjs build-prebuild/packages/sizes.json after npm run packages"

echo "=== the tarballs"
check "the main tarball holds dist/ (JS and .d.ts), bin/, the native sources and no tests, docs or binaries" node -e '
  const { execFileSync } = require("child_process");
  const files = execFileSync("tar", ["-tzf", process.argv[1]], { encoding: "utf8" }).trim().split("\n").map((f) => f.replace(/^package\//, ""));
  const need = ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/native.js", "bin/sharedformer.mjs",
    "CMakeLists.txt", "binding.gyp", "scripts/gyp-sources.cjs", "native/addon/addon.cpp"];
  const missing = need.filter((f) => !files.includes(f));
  const bad = files.filter((f) => /^(test|docs|lib|build|npm)\//.test(f) || f.endsWith(".node") || f.endsWith(".tgz"));
  if (!files.some((f) => f.startsWith("cuda/") && f.endsWith(".cu"))) missing.push("cuda/*.cu");
  if (missing.length || bad.length) { console.error("missing:", missing, "unexpected:", bad); process.exit(1); }
  console.log(files.length, "files");
' "$main_tgz"
check "the main package.json: exports (types, import), optionalDependencies on the CPU package of the same version, no install script" node -e '
  const { execFileSync } = require("child_process");
  const p = JSON.parse(execFileSync("tar", ["-xzOf", process.argv[1], "package/package.json"], { encoding: "utf8" }));
  const bad = [];
  if (p.exports?.["."]?.types !== "./dist/index.d.ts" || p.exports?.["."]?.import !== "./dist/index.js") bad.push("exports");
  if (p.exports?.["./package.json"] !== "./package.json") bad.push("exports ./package.json");
  if (JSON.stringify(p.optionalDependencies) !== JSON.stringify({ "@sharedformer/linux-x64": p.version })) bad.push("optionalDependencies " + JSON.stringify(p.optionalDependencies));
  for (const s of ["preinstall", "install", "postinstall", "prepare"]) if (p.scripts?.[s]) bad.push("scripts." + s);
  if (p.gypfile !== false) bad.push("gypfile must be false (or npm runs node-gyp at install)");
  if (bad.length) { console.error(bad.join("; ")); process.exit(1); }
' "$main_tgz"
check "the CPU tarball: os linux, cpu x64, libc glibc, only sharedformer.node + build-info.json, under 20 MB unpacked" node -e '
  const { execFileSync } = require("child_process");
  const p = JSON.parse(execFileSync("tar", ["-xzOf", process.argv[1], "package/package.json"], { encoding: "utf8" }));
  const files = execFileSync("tar", ["-tzvf", process.argv[1]], { encoding: "utf8" }).trim().split("\n");
  const bytes = files.reduce((s, l) => s + Number(l.split(/\s+/)[2]), 0);
  const bad = [];
  if (p.os?.join() !== "linux" || p.cpu?.join() !== "x64" || p.libc?.join() !== "glibc") bad.push("os/cpu/libc");
  if (!files.some((l) => l.endsWith("package/sharedformer.node"))) bad.push("no sharedformer.node");
  if (bytes >= 20e6) bad.push(`${bytes} bytes unpacked`);
  if (bad.length) { console.error(bad.join("; ")); process.exit(1); }
  console.log(bytes, "bytes unpacked");
' "$cpu_tgz"
check "no compiler is reachable on the install PATH" bash -c '
  for c in cc c++ gcc g++ cpp clang clang++ nvcc; do if PATH="$1" command -v "$c"; then echo "found $c"; exit 1; fi; done
  PATH="$1" command -v node && PATH="$1" command -v npm' _ "$nocc"

new_project() { # NAME -> an empty project folder
  local d="$tmp/$1"
  mkdir -p "$d" && printf '{ "name": "sf-install-%s", "private": true, "type": "module" }\n' "$1" >"$d/package.json"
  echo "$d"
}
npm_offline() { # DIR ARGS...: npm install in DIR, offline, no scripts, no compiler on the PATH
  local d=$1
  shift
  (cd "$d" && PATH="$nocc" npm install --offline --ignore-scripts --no-audit --no-fund "$@")
}

echo "=== prebuilt install: main + @sharedformer/linux-x64, offline, no scripts, no compiler"
app=$(new_project prebuilt)
check "npm install --offline --ignore-scripts sharedformer.tgz sharedformer-linux-x64.tgz" npm_offline "$app" "$main_tgz" "$cpu_tgz"
check "nothing was compiled or downloaded into the package (no build/ folder)" test ! -e "$app/node_modules/sharedformer/build"
smoke "$app" works "$app/node_modules/@sharedformer/linux-x64" false

if [ -f "$cuda_tgz" ]; then
  echo "=== CUDA package: main + @sharedformer/linux-x64 + @sharedformer/linux-x64-cuda"
  app=$(new_project cuda)
  check "npm install --offline --ignore-scripts (main, CPU and CUDA tarballs)" npm_offline "$app" "$main_tgz" "$cpu_tgz" "$cuda_tgz"
  smoke "$app" works "$app/node_modules/@sharedformer/linux-x64-cuda" true
else
  echo "=== CUDA package: not packed (no nvcc), not tested"
fi

echo "=== main package alone: no platform package, no compiler"
app=$(new_project alone)
check "npm install --offline --ignore-scripts sharedformer.tgz (the optional CPU package is skipped)" npm_offline "$app" "$main_tgz"
check "no @sharedformer package got installed" test ! -e "$app/node_modules/@sharedformer"
smoke "$app" missing

echo "=== build from source in that install (C/C++ compiler back on the PATH; nvcc hidden: CPU kernels only)"
check "npm install --offline --save-dev cmake-js@$cmakejs_version (from the test's npm cache)" npm_offline "$app" --save-dev "cmake-js@$cmakejs_version"
t0=$SECONDS
build() { (cd "$app/node_modules/sharedformer" && PATH="$nocuda" npm run build); }
check "npm run build in node_modules/sharedformer (cmake-js)" build
echo "    source build: $((SECONDS - t0)) s"
smoke "$app" works "$app/node_modules/sharedformer/build/Release" false

echo
echo "test:install took $((SECONDS - t_start)) s"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
