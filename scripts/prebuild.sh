#!/usr/bin/env bash
# prebuild.sh — builds the three npm packages from the working tree and packs them into OUTDIR:
#
#   sharedformer-<v>.tgz                      the main package: dist/ (JS + .d.ts, compiled here), bin/, and the native
#                                             sources for a build from source; optionalDependencies names the CPU package
#   sharedformer-linux-x64-<v>.tgz            npm/linux-x64: the CPU addon (cmake-js, SHAREDFORMER_CUDA=OFF), stripped
#   sharedformer-linux-x64-cuda-<v>.tgz       npm/linux-x64-cuda: the addon with the CUDA kernels (sm_80 + sm_90 SASS, sm_90
#                                             PTX, static cudart), stripped; only when nvcc is on the PATH
#
# usage: bash scripts/prebuild.sh [OUTDIR]          (default OUTDIR: build-prebuild/packages)
#
# Every build starts from an empty build folder (build-prebuild/), never from build/, so that the result depends
# only on the sources and the tools. It writes OUTDIR/sizes.json and OUTDIR/sizes.md (packed and unpacked size of each
# tarball); `node scripts/package-sizes.mjs OUTDIR/sizes.json` copies the table into README.md and docs/packaging.md.
#
# Environment:
#   SHAREDFORMER_PREBUILD_CUDA=auto|on|off   the CUDA package: auto (default) builds it when nvcc is on the PATH
#   SHAREDFORMER_PREBUILT_CPU=PATH           use this already-built CPU sharedformer.node instead of building one
#   SHAREDFORMER_PREBUILT_CUDA=PATH          the same for the CUDA package (CI passes its own cmake-js CUDA build)
#                                            Either binary is checked first: cmake-js build, this version, CUDA or not.
#   CMAKE_BUILD_PARALLEL_LEVEL               build jobs (default: the number of CPUs)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

out=${1:-build-prebuild/packages}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work="$root/build-prebuild"
mkdir -p "$work"
cuda_mode=${SHAREDFORMER_PREBUILD_CUDA:-auto}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

say() { echo "prebuild: $*"; }
die() { echo "prebuild: error: $*" >&2; exit 1; }

version=$(node -p "require('./package.json').version")
for pkg in linux-x64 linux-x64-cuda; do
  v=$(node -p "require('./npm/$pkg/package.json').version")
  [ "$v" = "$version" ] || die "npm/$pkg/package.json has version $v but package.json has $version: set both to the same version"
done
rm -f "$out"/sharedformer-*.tgz "$out"/sizes.json "$out"/sizes.md

# cmake-js flags shared by both binaries. Release, no tests or benchmarks; source paths mapped to '.' so the build
# folder's location does not end up in the binary. CMakeLists.txt sets no -march: the code is x86-64 baseline and the
# AVX2 / AVX-512 kernel variants are chosen at run time. The C++ runtime stays a shared library: linking it statically
# (-static-libstdc++) would pull in glibc 2.34-2.36 symbols (arc4random, _dl_find_object, pthread_*) and raise the
# glibc floor from 2.32 to 2.36, which excludes Ubuntu 22.04 and RHEL 9.
common=(
  --CDCMAKE_BUILD_TYPE=Release
  --CDSHAREDFORMER_TESTS=OFF
  --CDSHAREDFORMER_BENCH=OFF
  "--CDCMAKE_CXX_FLAGS=-ffile-prefix-map=$root=."
)

# Checks a built addon: it loads, it is a cmake-js build of this version, CUDA compiled in or not as expected.
check_binary() { # path cuda(true|false)
  node -e '
    const [path, cuda, version] = process.argv.slice(1);
    const a = require(path); const info = a.buildInfo(); const b = a.backends();
    const bad = [];
    if (info.builder !== "cmake-js") bad.push(`builder is ${info.builder}, not cmake-js`);
    if (info.version !== version) bad.push(`version is ${info.version}, not ${version}`);
    if (String(info.cuda) !== cuda) bad.push(`cuda is ${info.cuda}, expected ${cuda}`);
    if (cuda === "true" && b.cuda.architectures.join(",") !== "80-real,90-real,90-virtual")
      bad.push(`CUDA architectures ${b.cuda.architectures}, expected 80-real,90-real,90-virtual`);
    const t = a.full([2, 3], 1.5, "float32", "cpu"); const d = t.readSync(); t.dispose();
    if (d.length !== 6 || d[5] !== 1.5) bad.push("full() on the CPU returned wrong data");
    if (bad.length) { console.error(path + ": " + bad.join("; ")); process.exit(1); }
    console.log(`prebuild: ${path}: ${info.builder} ${info.version}, cuda ${info.cuda}, simd ${b.cpu.simd}`);
  ' "$1" "$2" "$version"
  local needed floor
  needed=$(objdump -p "$1" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')
  floor=$(objdump -T "$1" | grep -oE '(GLIBC|GLIBCXX)_[0-9.]+' | sort -uV | awk -F_ '{v[$1]=$0} END {print v["GLIBC"], v["GLIBCXX"]}')
  say "$(basename "$(dirname "$1")")/$(basename "$1") needs: $needed(newest symbol versions: $floor)"
  case " $needed " in *libcudart*) die "$1 links the CUDA runtime dynamically; it must be static" ;; esac
}

# build_addon NAME CUDA_MODE -> prints the path of the built sharedformer.node
build_addon() {
  local name=$1 mode=$2 dir="$work/$1"
  rm -rf "$dir"
  say "building the $name addon (cmake-js, SHAREDFORMER_CUDA=$mode) in ${dir#"$root"/} ..." >&2
  local t0=$SECONDS
  npx --no-install cmake-js compile -O "$dir" "--CDSHAREDFORMER_CUDA=$mode" "${common[@]}" >"$work/$name.log" 2>&1 \
    || { tail -40 "$work/$name.log" >&2; die "the $name build failed (log: ${work#"$root"/}/$name.log)"; }
  say "$name addon built in $((SECONDS - t0)) s" >&2
  echo "$dir/Release/sharedformer.node"
}

# place SRC PKG CUDA: stripped copy into npm/PKG, checked, with build-info.json beside it.
place() {
  local src=$1 pkg=$2 cuda=$3 dest="$root/npm/$2/sharedformer.node"
  [ -f "$src" ] || die "$src does not exist"
  rm -f "$dest" "$root/npm/$pkg/build-info.json"
  strip --strip-unneeded -o "$dest" "$src"
  check_binary "$dest" "$cuda"
  node -e '
    const fs = require("fs"), crypto = require("crypto");
    const [dest, pkg, src, flags, cxx, nvcc] = process.argv.slice(1);
    const a = require(dest);
    const info = {
      package: pkg, version: a.buildInfo().version, builder: a.buildInfo().builder, cuda: a.buildInfo().cuda,
      cudaArchitectures: a.backends().cuda.architectures, napiVersion: a.buildInfo().napiVersion,
      cmakeFlags: flags.split("\n").filter(Boolean), cxx, nvcc: nvcc || undefined,
      reusedBinary: src.includes("/build-prebuild/") ? undefined : src,
      sha256: crypto.createHash("sha256").update(fs.readFileSync(dest)).digest("hex"), bytes: fs.statSync(dest).size,
    };
    fs.writeFileSync(require("path").join(require("path").dirname(dest), "build-info.json"), JSON.stringify(info, null, 2) + "\n");
  ' "$dest" "@sharedformer/$pkg" "$src" "$(printf '%s\n' "--CDSHAREDFORMER_CUDA=$([ "$cuda" = true ] && echo ON || echo OFF)" "${common[@]}" | sed "s|$root|<root>|g")" \
    "$(c++ --version 2>/dev/null | head -1 || true)" "$( [ "$cuda" = true ] && nvcc --version 2>/dev/null | tail -1 || true)"
}

# ---- 1. the CPU addon ------------------------------------------------------------------------------------------------
if [ -n "${SHAREDFORMER_PREBUILT_CPU:-}" ]; then
  say "using the prebuilt CPU binary SHAREDFORMER_PREBUILT_CPU=$SHAREDFORMER_PREBUILT_CPU"
  cpu_bin=$(cd "$(dirname "$SHAREDFORMER_PREBUILT_CPU")" && pwd)/$(basename "$SHAREDFORMER_PREBUILT_CPU")
else
  cpu_bin=$(build_addon cpu OFF)
fi
place "$cpu_bin" linux-x64 false
cpu_bytes=$(stat -c %s npm/linux-x64/sharedformer.node)
[ "$cpu_bytes" -lt $((20 * 1024 * 1024)) ] || die "the CPU addon is $cpu_bytes bytes; it must stay well under 20 MB"

# ---- 2. the CUDA addon -----------------------------------------------------------------------------------------------
with_cuda=false
if [ -n "${SHAREDFORMER_PREBUILT_CUDA:-}" ]; then
  say "using the prebuilt CUDA binary SHAREDFORMER_PREBUILT_CUDA=$SHAREDFORMER_PREBUILT_CUDA"
  cuda_bin=$(cd "$(dirname "$SHAREDFORMER_PREBUILT_CUDA")" && pwd)/$(basename "$SHAREDFORMER_PREBUILT_CUDA")
  with_cuda=true
elif [ "$cuda_mode" = on ] || { [ "$cuda_mode" = auto ] && command -v nvcc >/dev/null; }; then
  cuda_bin=$(build_addon cuda ON)
  with_cuda=true
elif [ "$cuda_mode" = auto ] || [ "$cuda_mode" = off ]; then
  say "nvcc is not on the PATH (or SHAREDFORMER_PREBUILD_CUDA=off): the CUDA package is not built"
  rm -f npm/linux-x64-cuda/sharedformer.node npm/linux-x64-cuda/build-info.json
else
  die "SHAREDFORMER_PREBUILD_CUDA must be auto, on or off, got '$cuda_mode'"
fi
if [ "$with_cuda" = true ]; then
  place "$cuda_bin" linux-x64-cuda true
  node scripts/fatbin-archs.mjs npm/linux-x64-cuda/sharedformer.node --expect sm_80,sm_90 --expect-ptx sm_90 \
    || die "the CUDA addon does not hold the expected GPU code"
fi

# ---- 3. the main package: a staged copy of the files npm would publish, with dist/ compiled into it ------------------
stage="$work/stage/sharedformer"
rm -rf "$work/stage" && mkdir -p "$stage"
# The file list comes from npm itself (package.json "files"); dist/ is left out here and compiled fresh below.
npm pack --dry-run --json --ignore-scripts 2>/dev/null \
  | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const f of JSON.parse(s)[0].files)
      if(!f.path.startsWith("dist/")) console.log(f.path)})' >"$work/stage/files.txt"
while IFS= read -r f; do
  mkdir -p "$stage/$(dirname "$f")" && cp -p "$f" "$stage/$f"
done <"$work/stage/files.txt"
say "compiling dist/ (tsc -p tsconfig.build.json) ..."
npx --no-install tsc -p tsconfig.build.json --outDir "$stage/dist"
[ -f "$stage/dist/index.js" ] && [ -f "$stage/dist/index.d.ts" ] || die "tsc did not write dist/index.js and dist/index.d.ts"
# The published package.json: optionalDependencies names the CPU package of the same version (it lives only in the
# published copy: in the repository it would make `npm ci` fail until that version is on the registry); only the
# scripts that work in an installed copy are kept (the source build).
node -e '
  const fs = require("fs"); const [file, version] = process.argv.slice(1);
  const p = JSON.parse(fs.readFileSync(file, "utf8"));
  p.optionalDependencies = { "@sharedformer/linux-x64": version };
  const keep = ["build", "build:cpu", "build:gyp"];
  p.scripts = Object.fromEntries(Object.entries(p.scripts).filter(([k]) => keep.includes(k)));
  delete p.ava; // the test runner settings mean nothing in an installed copy
  fs.writeFileSync(file, JSON.stringify(p, null, 2) + "\n");
' "$stage/package.json" "$version"

# ---- 4. pack --------------------------------------------------------------------------------------------------------
dirs=("$stage" "$root/npm/linux-x64")
[ "$with_cuda" = true ] && dirs+=("$root/npm/linux-x64-cuda")
jsons=()
for d in "${dirs[@]}"; do
  j="$work/pack-$(basename "$d").json"
  (cd "$d" && npm pack --json --ignore-scripts --pack-destination "$out" 2>/dev/null) >"$j" || die "npm pack failed in $d"
  jsons+=("$j")
done
node -e '
  const fs = require("fs"); const [out, ...files] = process.argv.slice(1);
  const rows = files.map((f) => JSON.parse(fs.readFileSync(f, "utf8"))[0])
    .map((p) => ({ name: p.name, version: p.version, filename: p.filename, size: p.size, unpackedSize: p.unpackedSize, entryCount: p.entryCount }));
  fs.writeFileSync(out + "/sizes.json", JSON.stringify(rows, null, 2) + "\n");
  const mb = (n) => (n / 1e6).toFixed(2) + " MB";
  const md = ["| package | tarball | packed | unpacked | files |", "| --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| \`${r.name}\` | \`${r.filename}\` | ${mb(r.size)} | ${mb(r.unpackedSize)} | ${r.entryCount} |`)];
  fs.writeFileSync(out + "/sizes.md", md.join("\n") + "\n");
  console.log(md.join("\n"));
' "$out" "${jsons[@]}"
say "packages in $out"
