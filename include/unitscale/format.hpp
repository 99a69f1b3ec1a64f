#pragma once
// The format layer: descriptors, storage types, scalar and bulk conversion, Eigen and fmt support.

#include "unitscale/format/bulk.hpp"
#include "unitscale/format/convert.hpp"
#include "unitscale/format/eigen.hpp"
#include "unitscale/format/float4.hpp"
#include "unitscale/format/float6.hpp"
#include "unitscale/format/float8.hpp"
#include "unitscale/format/fmt.hpp"
#include "unitscale/format/format_spec.hpp"
#include "unitscale/format/format_traits.hpp"
#include "unitscale/format/half.hpp"
#include "unitscale/format/numeric_limits.hpp"
#include "unitscale/format/packed.hpp"
#include "unitscale/format/rounding.hpp"
