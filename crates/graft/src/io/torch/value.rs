//! The values the pickle reader builds: plain data, allow-listed callables, storages and tensor
//! views. Containers are shared (`Rc`), so reading a memoized value copies nothing.

use std::rc::Rc;

use candle_core::DType;

/// The callables a pickle may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: a state dict's container.
    OrderedDict,
    /// `torch._utils._rebuild_tensor` / `_rebuild_tensor_v2`: a tensor view of a storage.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter`: an `nn.Parameter` around a tensor.
    RebuildParameter,
    /// A typed storage class (`torch.FloatStorage`), holding elements of this dtype.
    Storage(DType),
}

impl Global {
    /// The allow-listed callable `module.name`, or `None` when it is not allowed.
    pub(super) fn lookup(module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => Some(Global::RebuildTensor),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", storage) => storage_dtype(storage).map(Global::Storage),
            _ => None,
        }
    }
}

/// The dtype of a typed storage class, for the ones candle can hold.
fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "DoubleStorage" => DType::F64,
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" => DType::U8,
        _ => return None,
    })
}

/// A storage named by a persistent id: `('storage', type, key, location, numel[, view])`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRef {
    /// Element type.
    pub dtype: DType,
    /// The key its bytes are stored under.
    pub key: String,
    /// Elements in the whole storage.
    pub numel: usize,
    /// Legacy storage views: `(offset, numel)` of the view inside the storage.
    pub view: Option<(usize, usize)>,
}

/// A tensor: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage it reads.
    pub storage: Rc<StorageRef>,
    /// Offset of its first element, in elements.
    pub offset: usize,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its strides, in elements.
    pub stride: Vec<usize>,
}

/// A container's items with the nesting depth below it.
#[derive(Debug, Clone)]
pub struct Node<T> {
    /// The items.
    pub items: Vec<T>,
    /// 1 + the deepest item's depth.
    pub depth: usize,
}

/// A value the reader builds.
#[derive(Debug, Clone)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(Rc<str>),
    /// An allow-listed callable.
    Global(Global),
    /// A tuple.
    Tuple(Rc<Node<Value>>),
    /// A list.
    List(Rc<Node<Value>>),
    /// A dict (or `OrderedDict`), in insertion order.
    Dict(Rc<Node<(Value, Value)>>),
    /// A storage from a persistent id.
    Storage(Rc<StorageRef>),
    /// A rebuilt tensor.
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// Nesting depth: 0 for scalars.
    pub(super) fn depth(&self) -> usize {
        match self {
            Value::Tuple(n) | Value::List(n) => n.depth,
            Value::Dict(n) => n.depth,
            Value::Storage(_) => 1,
            Value::Tensor(_) => 2,
            _ => 0,
        }
    }

    /// A short name of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Global(_) => "callable",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}
