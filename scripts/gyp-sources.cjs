// Prints the native sources that binding.gyp compiles: every .cpp under native/ except the CUDA-only and test-only
// ones, so that the node-gyp build and the cmake-js build always compile the same C++.
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const out = [];
for (const dir of ['native/core', 'native/cpu', 'native/addon']) {
  for (const f of fs.readdirSync(path.join(root, dir)).sort()) if (f.endsWith('.cpp')) out.push(`${dir}/${f}`);
}
console.log(out.join('\n'));
