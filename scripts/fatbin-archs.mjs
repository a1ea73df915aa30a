#!/usr/bin/env node
// fatbin-archs.mjs — lists the GPU code embedded in a binary (machine code per sm_XX, PTX per sm_XX) by reading its
// .nv_fatbin ELF section directly, so the check does not trust the build's own report and needs no cuobjdump.
//
//   node scripts/fatbin-archs.mjs FILE [--expect sm_80,sm_90] [--expect-ptx sm_90] [--json]
//
// The fatbin layout (little endian): a 16-byte header { u32 magic 0xBA55ED50, u16 version, u16 headerSize,
// u64 entriesSize } followed by entries { u16 kind (1 PTX, 2 ELF), u16, u32 headerSize, u64 payloadSize, u32, u32,
// u16 minor, u16 major, u32 arch, ... }; the next entry starts headerSize + payloadSize later. A binary built from
// several .cu files holds several fatbins one after the other (8-byte aligned).
import { readFileSync } from 'node:fs';

const MAGIC = 0xba55ed50;

/** Returns { sass: Set<string>, ptx: Set<string>, fatbins: number } for the ELF file's .nv_fatbin section. */
export function fatbinArchs(buf) {
  if (buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) throw new Error('not a little-endian ELF64 file');
  const shoff = Number(buf.readBigUInt64LE(0x28));
  const shentsize = buf.readUInt16LE(0x3a);
  const shnum = buf.readUInt16LE(0x3c);
  const shstrndx = buf.readUInt16LE(0x3e);
  const sh = (i) => {
    const o = shoff + i * shentsize;
    return { name: buf.readUInt32LE(o), type: buf.readUInt32LE(o + 4), offset: Number(buf.readBigUInt64LE(o + 0x18)), size: Number(buf.readBigUInt64LE(o + 0x20)) };
  };
  const strtab = sh(shstrndx);
  const nameOf = (s) => {
    const start = strtab.offset + s.name;
    return buf.toString('latin1', start, buf.indexOf(0, start));
  };
  let section;
  for (let i = 0; i < shnum; i++) {
    const s = sh(i);
    if (nameOf(s) === '.nv_fatbin') section = s;
  }
  const out = { sass: new Set(), ptx: new Set(), fatbins: 0 };
  if (!section) return out;
  if (section.type === 8) throw new Error('.nv_fatbin has no contents in the file (SHT_NOBITS)');
  let p = section.offset;
  const end = section.offset + section.size;
  while (p + 16 <= end) {
    if (buf.readUInt32LE(p) !== MAGIC) { p += 8; continue; } // padding between fatbins
    const headerSize = buf.readUInt16LE(p + 6);
    const entriesSize = Number(buf.readBigUInt64LE(p + 8));
    const fatEnd = p + headerSize + entriesSize;
    if (fatEnd > end) throw new Error(`fatbin at ${p} runs past the end of .nv_fatbin`);
    out.fatbins++;
    let e = p + headerSize;
    while (e < fatEnd) {
      const kind = buf.readUInt16LE(e);
      const eh = buf.readUInt32LE(e + 4);
      const size = Number(buf.readBigUInt64LE(e + 8));
      const arch = buf.readUInt32LE(e + 28);
      if (eh === 0) throw new Error(`fatbin entry at ${e} has a zero header size`);
      if (kind === 1) out.ptx.add(`sm_${arch}`);
      else if (kind === 2) out.sass.add(`sm_${arch}`);
      e += eh + size;
    }
    p = fatEnd;
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const file = args[0];
  if (!file) {
    console.error('usage: node scripts/fatbin-archs.mjs FILE [--expect sm_80,sm_90] [--expect-ptx sm_90] [--json]');
    process.exit(2);
  }
  const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1].split(',') : undefined; };
  const r = fatbinArchs(readFileSync(file));
  const sass = [...r.sass].sort(), ptx = [...r.ptx].sort();
  if (args.includes('--json')) console.log(JSON.stringify({ fatbins: r.fatbins, sass, ptx }));
  else console.log(`${file}: ${r.fatbins} fatbins; machine code: ${sass.join(' ') || 'none'}; PTX: ${ptx.join(' ') || 'none'}`);
  const missing = [...(opt('--expect') ?? []).filter((a) => !r.sass.has(a)).map((a) => `machine code for ${a}`),
    ...(opt('--expect-ptx') ?? []).filter((a) => !r.ptx.has(a)).map((a) => `PTX for ${a}`)];
  if (missing.length) {
    console.error(`${file}: missing ${missing.join(', ')}`);
    process.exit(1);
  }
}
