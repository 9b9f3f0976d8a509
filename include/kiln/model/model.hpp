// kiln/model/model.hpp: the model DSL in one include.
#pragma once
#include "kiln/model/components.hpp"
#include "kiln/model/decoder.hpp"
#include "kiln/model/settings.hpp"
#include "kiln/model/with.hpp"
