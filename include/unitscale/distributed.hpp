#pragma once
// Data-parallel training (docs/distributed.md): the Communicator interface and the gradient
// exchange. The MPI communicator, distributed/mpi_communicator.hpp, is in the separate
// unitscale::mpi library and is not included here.

#include "unitscale/distributed/communicator.hpp"
#include "unitscale/distributed/gradient_exchange.hpp"
