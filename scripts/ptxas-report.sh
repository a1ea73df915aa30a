#!/usr/bin/env bash
# ptxas-report.sh — registers, spills, stack and static shared memory of the CUDA kernels, per architecture, from
# ptxas (-Xptxas -v), and a check on the tensor-core kernels listed below: none of them may spill, except a known
# spiller, which may not spill MORE than its recorded figures. So the check is "no new spill, and no spill at all in
# the kernels that are listed without figures" (the pipelined bf16 GEMM among them).
#   bash scripts/ptxas-report.sh            (.ci/run runs it when nvcc is present; exit 1 on a failed check)
# Compiles the files below (and any other cuda/*.cu that issues mma.sync or ldmatrix, for the table only) as the
# build does (Release flags, warnings as errors) for sm_80 and sm_90 — cuda/*_sm90.cu (the Hopper wgmma GEMM) for
# sm_90a only, as CMakeLists.txt builds it; no GPU needed. Dynamic shared memory is chosen at launch and does not
# appear here (the pipelined GEMM takes 64 KiB, the wgmma GEMM 129 KiB, its TMA variant 161 KiB: docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=(cuda/gemm.cu cuda/attention.cu cuda/persistent.cu cuda/gemm_sm90.cu)
ARCHS=(80 90)
# The tensor-core kernels checked: "name-pattern arch max-spill-stores max-spill-loads" (the pattern is matched
# against the demangled kernel name; "*" = every arch). 0 0 = must not spill. A known spiller keeps its figures as
# measured with CUDA 13 when it was listed (a smaller spill passes; update the figure down when it shrinks).
# The first line that matches a kernel and arch applies (known spillers first).
CHECKED=(
  "gemm_mma_kernel<true> 80 228 348"
  "gemm_mma_kernel<true> 90 164 252"
  "attn_fwd_bf16_kernel<32> 80 4 4"
  "attn_fwd_bf16_kernel<32> 90 4 4"
  "attn_bwd_dkv_bf16_kernel<32> 90 48 32"
  "attn_bwd_dkv_bf16_kernel<64> 80 28 48"
  "attn_bwd_dq_bf16_kernel<64> 90 20 80"
  "gemm_bf16_kernel< * 0 0"
  "gemm_mma_kernel<false> * 0 0"
  "attn_fwd_bf16_kernel * 0 0"
  "attn_fwd_fa_kernel * 0 0"
  "attn_bwd_dq_fa_kernel * 0 0"
  "attn_bwd_dkv_fa_kernel * 0 0"
  "attn_bwd_dkv_bf16_kernel * 0 0"
  "attn_bwd_dq_bf16_kernel * 0 0"
  "shared_block_kernel * 0 0"
  "gemm_wgmma_kernel 90a 0 0"
  "gemm_wgmma_tma_kernel 90a 0 0"
)

command -v nvcc >/dev/null || { echo "ptxas-report: nvcc not found"; exit 2; }
for f in cuda/*.cu; do
  case " ${FILES[*]} " in *" $f "*) continue ;; esac
  grep -qE 'mma_(bf16|tf32)\(|ldmatrix_x' "$f" && FILES+=("$f")
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gencode=()
for a in "${ARCHS[@]}"; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
for f in "${FILES[@]}"; do
  gc=("${gencode[@]}")
  case "$f" in *_sm90.cu) gc=(-gencode "arch=compute_90a,code=sm_90a") ;; esac
  nvcc -std=c++17 -O3 -DNDEBUG -Inative "${gc[@]}" --Werror=all-warnings -Xcompiler=-Wall,-Werror -Xptxas -v \
    -c "$f" -o "$tmp/$(basename "$f").o" >"$tmp/$(basename "$f").log" 2>&1 || { cat "$tmp/$(basename "$f").log"; echo "ptxas-report: $f does not compile"; exit 1; }
  cat "$tmp/$(basename "$f").log" >>"$tmp/all.log"
done

CHECKED_SPEC=$(printf '%s\n' "${CHECKED[@]}") python3 - "$tmp/all.log" <<'PY'
import os, re, subprocess, sys
lines = open(sys.argv[1]).read().splitlines()
rows, cur = [], None
for l in lines:
    m = re.search(r"Compiling entry function '([^']+)' for 'sm_(\w+)'", l)
    if m:
        cur = {"mangled": m.group(1), "arch": m.group(2), "regs": 0, "st": 0, "ld": 0, "stack": 0, "smem": 0}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", l)
    if m:
        cur["stack"], cur["st"], cur["ld"] = map(int, m.groups())
    m = re.search(r"Used (\d+) registers", l)
    if m:
        cur["regs"] = int(m.group(1))
        s = re.search(r"(\d+) bytes smem", l)
        cur["smem"] = int(s.group(1)) if s else 0
names = subprocess.run(["c++filt"], input="\n".join(r["mangled"] for r in rows), capture_output=True, text=True).stdout.splitlines() if rows else []
def short(d):
    d = d.replace("(anonymous namespace)::", "").replace("sf::cuda::", "")
    return (d[5:] if d.startswith("void ") else d).split("(")[0]
for r, d in zip(rows, names):
    r["name"] = short(d)
specs = [l.split() for l in os.environ["CHECKED_SPEC"].splitlines() if l.strip()]
bad, seen = [], set()
w = max([len(r["name"]) for r in rows] + [6])
print(f"{'kernel':<{w}}  arch    regs  spill-st  spill-ld  stack   smem  check")
for r in sorted(rows, key=lambda r: (r["name"], r["arch"])):
    verdict = ""
    for pat, arch, mst, mld in specs:
        if verdict:
            break
        if pat in r["name"] and arch in ("*", r["arch"]):
            seen.add((pat, arch))
            mst, mld = int(mst), int(mld)
            if r["st"] > mst or r["ld"] > mld:
                verdict = f"FAIL (allowed {mst}/{mld})"
                bad.append(f"{r['name']} sm_{r['arch']}: {r['st']} bytes spill stores, {r['ld']} loads (allowed {mst}/{mld})")
            else:
                verdict = "ok" if mst == 0 else f"known spiller (<= {mst}/{mld})"
    print(f"{r['name']:<{w}}  sm_{r['arch']:<3}  {r['regs']:4d}  {r['st']:8d}  {r['ld']:8d}  {r['stack']:5d}  {r['smem']:5d}  {verdict}")
for pat, arch, _, _ in specs:
    if (pat, arch) not in seen:
        bad.append(f"listed kernel {pat} (arch {arch}) was not found in ptxas' output")
for b in bad:
    print("FAIL: " + b)
print("ptxas check: " + ("ok" if not bad else f"{len(bad)} failure(s)"))
sys.exit(1 if bad else 0)
PY
