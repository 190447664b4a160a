//! A bounded pickle reader for PyTorch state dicts: a stack machine over the opcodes that
//! `torch.save` emits (protocols 2-4), which builds plain values and never calls anything.
//!
//! `GLOBAL` may only name the few callables a state dict needs — `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor` / `_rebuild_tensor_v2` / `_rebuild_parameter` and the typed
//! storage classes (`torch.FloatStorage`, ...); any other name (`os.system`, `builtins.eval`)
//! is refused before anything else happens. `REDUCE` on an allowed callable builds the value it
//! stands for (an empty dict, a tensor reference). Every length is checked against the bytes left
//! before allocating, containers are shared (`Rc`) so memo reads cost nothing, copies on write are
//! charged to a budget proportional to the input, and nesting is capped at [`MAX_DEPTH`]. A
//! memoized container read back holds what it held when it was memoized (enough for state
//! dicts, which never refer to themselves).

use std::collections::HashMap;
use std::rc::Rc;

use super::value::{Global, Node, StorageRef, TensorRef, Value};
use super::TorchErrorKind;

/// Deepest nesting of tuples, lists and dicts accepted (a state dict needs about 6).
pub const MAX_DEPTH: usize = 32;

/// What one pickle produced.
#[derive(Debug)]
pub struct Unpickled {
    /// The value `STOP` returned.
    pub value: Value,
    /// Bytes the pickle took, `STOP` included.
    pub len: usize,
    /// Every storage a persistent id named, in first-seen order.
    pub storages: Vec<Rc<StorageRef>>,
}

/// Reads one pickle from the start of `data`; `base` is its offset in the file, for messages.
pub fn unpickle(data: &[u8], base: usize) -> Result<Unpickled, TorchErrorKind> {
    let mut m = Machine {
        data,
        pos: 0,
        base,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages: Vec::new(),
        copy_budget: data.len().saturating_mul(4).saturating_add(1 << 16),
    };
    let value = m.run()?;
    Ok(Unpickled { value, len: m.pos, storages: m.storages })
}

/// The pickle machine's state.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    base: usize,
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    storages: Vec<Rc<StorageRef>>,
    copy_budget: usize,
}

impl<'a> Machine<'a> {
    /// Runs opcodes until `STOP` and returns the value on top of the stack.
    fn run(&mut self) -> Result<Value, TorchErrorKind> {
        loop {
            self.op_at = self.pos;
            let op = self.take(1)?[0];
            match op {
                0x80 => {
                    let proto = self.take(1)?[0];
                    if proto > 5 {
                        return Err(self.bad(format!("pickle protocol {proto} is not supported")));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => {
                    let value = self.pop()?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return Err(self.bad("STOP with values or marks left on the stack".into()));
                    }
                    return Ok(value);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.stack.push(Value::Int(v.into()))
                }
                b'K' => {
                    let v = self.take(1)?[0];
                    self.stack.push(Value::Int(v.into()))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.stack.push(Value::Int(v.into()))
                }
                0x8a => {
                    let n = usize::from(self.take(1)?[0]);
                    if n > 8 {
                        return Err(self.bad(format!("integer of {n} bytes does not fit in 64 bits")));
                    }
                    let bytes = self.take(n)?;
                    let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                    buf[..n].copy_from_slice(bytes);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    self.push_str(n)?
                }
                0x8c | b'U' => {
                    let n = usize::from(self.take(1)?[0]);
                    self.push_str(n)?
                }
                b'T' => {
                    let n = u32::from_le_bytes(self.array()?) as usize;
                    self.push_str(n)?
                }
                b')' => self.stack.push(Value::Tuple(Rc::new(Node { items: Vec::new(), depth: 1 }))),
                b']' => self.stack.push(Value::List(Rc::new(Node { items: Vec::new(), depth: 1 }))),
                b'}' => self.stack.push(Value::Dict(Rc::new(Node { items: Vec::new(), depth: 1 }))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_tuple(items)?
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < self.floor() + n {
                        return Err(self.bad("stack underflow".into()));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_tuple(items)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let depth = self.depth_of(items.iter())?;
                    self.stack.push(Value::List(Rc::new(Node { items, depth })))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = Value::Dict(Rc::new(Node { items: Vec::new(), depth: 1 }));
                    self.stack.push(dict);
                    self.set_items(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'q' => {
                    let id = self.take(1)?[0];
                    self.memo_put(id.into())?
                }
                b'r' => {
                    let id = u32::from_le_bytes(self.array()?);
                    self.memo_put(id)?
                }
                0x94 => {
                    let id = u32::try_from(self.memo.len()).map_err(|_| self.bad("memo overflow".into()))?;
                    self.memo_put(id)?
                }
                b'h' => {
                    let id = self.take(1)?[0];
                    self.memo_get(id.into())?
                }
                b'j' => {
                    let id = u32::from_le_bytes(self.array()?);
                    self.memo_get(id)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(&module, &name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => self.push_global(m, n)?,
                        _ => return Err(self.bad("STACK_GLOBAL needs two strings".into())),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = self.call(callable, args)?;
                    self.stack.push(value)
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.pop()?;
                    match (&target, &state) {
                        // An OrderedDict's attributes (`_metadata`): not needed for the tensors.
                        (Value::Dict(_), Value::Dict(_) | Value::None) => self.stack.push(target),
                        _ => {
                            return Err(self.bad(format!(
                                "BUILD of a {} with a {} is not part of a state dict",
                                target.type_name(),
                                state.type_name()
                            )))
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.storages.push(storage.clone());
                    self.stack.push(Value::Storage(storage))
                }
                other => {
                    return Err(self.bad(format!(
                        "opcode 0x{other:02x} ({:?}) is not supported in a state dict",
                        char::from(other)
                    )))
                }
            }
        }
    }

    /// A malformed-pickle error at the current opcode.
    fn bad(&self, what: String) -> TorchErrorKind {
        TorchErrorKind::Pickle { offset: self.base + self.op_at, what }
    }

    /// The next `n` bytes, or a truncation error.
    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchErrorKind> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(TorchErrorKind::Truncated { offset: self.base + self.pos, needed: n - left });
        }
        let data: &'a [u8] = self.data;
        let out = &data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], TorchErrorKind> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A `\n`-terminated line of at most 256 bytes (a GLOBAL's module or name).
    fn line(&mut self) -> Result<String, TorchErrorKind> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().take(257).position(|&b| b == b'\n') else {
            return if rest.len() < 257 {
                Err(TorchErrorKind::Truncated { offset: self.base + self.pos, needed: 1 })
            } else {
                Err(self.bad("GLOBAL name longer than 256 bytes".into()))
            };
        };
        let line = std::str::from_utf8(&rest[..end]).map_err(|_| self.bad("GLOBAL name is not UTF-8".into()))?;
        let line = line.to_string();
        self.pos += end + 1;
        Ok(line)
    }

    /// Pushes a string of `n` bytes.
    fn push_str(&mut self, n: usize) -> Result<(), TorchErrorKind> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| self.bad("string is not valid UTF-8".into()))?;
        let s: Rc<str> = Rc::from(s);
        self.stack.push(Value::Str(s));
        Ok(())
    }

    /// Pushes an allow-listed callable, or refuses the name.
    fn push_global(&mut self, module: &str, name: &str) -> Result<(), TorchErrorKind> {
        match Global::lookup(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => Err(TorchErrorKind::Disallowed {
                offset: self.base + self.op_at,
                module: module.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// The stack index below which the current mark protects values.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Pops one value above the current mark.
    fn pop(&mut self) -> Result<Value, TorchErrorKind> {
        if self.stack.len() <= self.floor() {
            return Err(self.bad("stack underflow".into()));
        }
        self.stack.pop().ok_or_else(|| self.bad("stack underflow".into()))
    }

    /// Pops every value above the last mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, TorchErrorKind> {
        let mark = self.marks.pop().ok_or_else(|| self.bad("no MARK to pop to".into()))?;
        Ok(self.stack.split_off(mark))
    }

    /// The depth of a container holding `items`, refused past [`MAX_DEPTH`].
    fn depth_of<'v>(&self, items: impl Iterator<Item = &'v Value>) -> Result<usize, TorchErrorKind> {
        let depth = 1 + items.map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(self.bad(format!("values nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth)
    }

    /// Pushes a tuple of `items`.
    fn push_tuple(&mut self, items: Vec<Value>) -> Result<(), TorchErrorKind> {
        let depth = self.depth_of(items.iter())?;
        self.stack.push(Value::Tuple(Rc::new(Node { items, depth })));
        Ok(())
    }

    /// Charges the copy of a shared container of `n` items (about to be written) to the budget.
    fn charge_copy<T>(&mut self, rc: &Rc<T>, n: usize) -> Result<(), TorchErrorKind> {
        if Rc::strong_count(rc) == 1 {
            return Ok(());
        }
        self.copy_budget = self
            .copy_budget
            .checked_sub(n)
            .ok_or_else(|| self.bad("containers copied too often (a pickle built to exhaust memory?)".into()))?;
        Ok(())
    }

    /// Appends `items` to the list on top of the stack.
    fn append(&mut self, items: Vec<Value>) -> Result<(), TorchErrorKind> {
        let depth = self.depth_of(items.iter())?;
        let Some(Value::List(mut list)) = self.stack.pop() else {
            return Err(self.bad("APPEND target is not a list".into()));
        };
        self.charge_copy(&list, list.items.len())?;
        let node = Rc::make_mut(&mut list);
        node.items.extend(items);
        node.depth = node.depth.max(depth);
        self.stack.push(Value::List(list));
        Ok(())
    }

    /// Adds `(key, value)` pairs from the flat `items` to the dict on top of the stack.
    fn set_items(&mut self, items: Vec<Value>) -> Result<(), TorchErrorKind> {
        if !items.len().is_multiple_of(2) {
            return Err(self.bad("SETITEMS with an odd number of values".into()));
        }
        let depth = self.depth_of(items.iter())?;
        let Some(Value::Dict(mut dict)) = self.stack.pop() else {
            return Err(self.bad("SETITEM target is not a dict".into()));
        };
        self.charge_copy(&dict, dict.items.len())?;
        let node = Rc::make_mut(&mut dict);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            node.items.push((k, v));
        }
        node.depth = node.depth.max(depth);
        self.stack.push(Value::Dict(dict));
        Ok(())
    }

    /// Stores the top of the stack in the memo.
    fn memo_put(&mut self, id: u32) -> Result<(), TorchErrorKind> {
        let top = self.stack.last().ok_or_else(|| self.bad("memo put on an empty stack".into()))?.clone();
        self.memo.insert(id, top);
        Ok(())
    }

    /// Pushes a memoized value (shared, not copied).
    fn memo_get(&mut self, id: u32) -> Result<(), TorchErrorKind> {
        let v = self.memo.get(&id).cloned().ok_or_else(|| self.bad(format!("memo entry {id} was never stored")))?;
        self.stack.push(v);
        Ok(())
    }

    /// `REDUCE` / `NEWOBJ`: builds what an allow-listed callable returns.
    fn call(&self, callable: Value, args: Value) -> Result<Value, TorchErrorKind> {
        let Value::Global(global) = callable else {
            return Err(self.bad(format!("REDUCE on a {}, not an allowed callable", callable.type_name())));
        };
        let Value::Tuple(args) = args else {
            return Err(self.bad(format!("REDUCE arguments are a {}, not a tuple", args.type_name())));
        };
        let args = &args.items;
        match global {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Rc::new(Node { items: Vec::new(), depth: 1 }))),
            Global::RebuildTensor if (4..=7).contains(&args.len()) => {
                let Value::Storage(storage) = &args[0] else {
                    return Err(self.bad("_rebuild_tensor: the first argument is not a storage".into()));
                };
                let offset = self.count(&args[1], "storage offset")?;
                let shape = self.counts(&args[2], "size")?;
                let stride = self.counts(&args[3], "stride")?;
                if shape.len() != stride.len() {
                    return Err(self.bad(format!("tensor of {} dims has {} strides", shape.len(), stride.len())));
                }
                Ok(Value::Tensor(Rc::new(TensorRef { storage: storage.clone(), offset, shape, stride })))
            }
            Global::RebuildParameter if (2..=3).contains(&args.len()) => match &args[0] {
                Value::Tensor(t) => Ok(Value::Tensor(t.clone())),
                other => Err(self.bad(format!("_rebuild_parameter of a {}", other.type_name()))),
            },
            g => Err(self.bad(format!("{g:?} called with {} arguments", args.len()))),
        }
    }

    /// A non-negative integer argument.
    fn count(&self, v: &Value, what: &str) -> Result<usize, TorchErrorKind> {
        match v {
            Value::Int(i) => usize::try_from(*i).map_err(|_| self.bad(format!("{what} {i} is negative"))),
            other => Err(self.bad(format!("{what} is a {}, not an int", other.type_name()))),
        }
    }

    /// A tuple of non-negative integers.
    fn counts(&self, v: &Value, what: &str) -> Result<Vec<usize>, TorchErrorKind> {
        match v {
            Value::Tuple(t) => t.items.iter().map(|x| self.count(x, what)).collect(),
            other => Err(self.bad(format!("{what} is a {}, not a tuple", other.type_name()))),
        }
    }

    /// `BINPERSID`: a storage named `('storage', type, key, location, numel[, view])`.
    fn persistent_load(&self, pid: Value) -> Result<Rc<StorageRef>, TorchErrorKind> {
        let Value::Tuple(t) = pid else {
            return Err(self.bad(format!("persistent id is a {}, not a tuple", pid.type_name())));
        };
        let items = &t.items;
        if !(5..=6).contains(&items.len()) || items[0].as_str() != Some("storage") {
            return Err(self.bad("persistent id is not ('storage', type, key, location, size[, view])".into()));
        }
        let Value::Global(Global::Storage(dtype)) = items[1] else {
            return Err(self.bad(format!("storage type is a {}, not a storage class", items[1].type_name())));
        };
        let key = items[2].as_str().ok_or_else(|| self.bad("storage key is not a string".into()))?.to_string();
        let numel = self.count(&items[4], "storage size")?;
        let view = match items.get(5) {
            None | Some(Value::None) => None,
            Some(Value::Tuple(v)) if v.items.len() == 3 => {
                Some((self.count(&v.items[1], "view offset")?, self.count(&v.items[2], "view size")?))
            }
            Some(other) => return Err(self.bad(format!("storage view metadata is a {}", other.type_name()))),
        };
        Ok(Rc::new(StorageRef { dtype, key, numel, view }))
    }
}
